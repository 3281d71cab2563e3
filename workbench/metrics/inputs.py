"""What every metric does to its inputs: numpy arrays from torch or numpy (the metrics never import torch), one
`DataError` per bad input naming where it is, percentages as detectron2 reports them."""
from __future__ import annotations

from typing import Any

import numpy as np

from workbench.data.problems import DataError, Problem


def as_numpy(x: Any) -> np.ndarray:
    """A torch tensor (moved to the CPU, detached) or array-like as a numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def input_error(code: str, where: str, message: str) -> DataError:
    """The error for one bad input: `where` names the image, file or field, `message` what was expected."""
    return DataError([Problem(code, where, message)])


def percent(x: float | None) -> float | None:
    """A fraction as a percentage; None (undefined) stays None."""
    return None if x is None else 100.0 * x
