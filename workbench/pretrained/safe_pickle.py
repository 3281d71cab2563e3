"""Reading upstream's published `model_final_*.pkl` without running pickled code.

Those files are `pickle.dump({"model": {name: numpy array}, ...})` (detectron2's model zoo format, often
written by Python 2: hence latin-1). A plain `pickle.load` would import and call whatever the file names; this
unpickler resolves only what numpy arrays and plain containers need and refuses anything else, naming the file.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

# (module, name) pairs a pickle of numpy arrays in dicts/lists may reference; nothing else is importable.
ALLOWED_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("__builtin__", "set"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 spell bytes
})


class RefusedPickleError(WorkbenchError, pickle.UnpicklingError):
    """A .pkl that holds more than numpy arrays and plain containers, or is not a pickle: names the file."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedPickleError(
                f"{self.path}: refused to unpickle {module}.{name}: only numpy arrays and plain containers are "
                f"allowed in an upstream weights file (the model zoo's model_final_*.pkl holds nothing else). "
                f"If you trust this file, convert it to .pth or .safetensors with your own tools first.")
        return super().find_class(module, name)

    def persistent_load(self, pid):  # torch's zip/legacy formats use persistent ids; a .pkl never does
        raise RefusedPickleError(f"{self.path}: holds persistent references (a torch file?); "
                                 f"name it .pth so it is read with torch.load(weights_only=True)")


def load_numpy_pickle(path: str | Path) -> Any:
    """The unpickled object of `path`, built only from numpy arrays and plain containers."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return _NumpyOnlyUnpickler(f, path).load()
        except RefusedPickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise RefusedPickleError(f"{path}: not a readable pickle of numpy arrays ({err})") from err
