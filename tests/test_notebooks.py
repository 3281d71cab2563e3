"""Every notebook in notebooks/ runs top to bottom, headless, with small parameters.

Each notebook is copied into a temporary folder and executed there with nbclient (the kernel's working
directory is that folder), with a papermill-style injected cell after the `parameters` cell that sets the
small values of tests/notebook_parameters.py (paths into the temporary folder, so nothing is written into the
repository). Any cell error fails the test and names the notebook and cell.
"""
from __future__ import annotations

import pathlib
import shutil
import time

import pytest
from notebook_parameters import small_parameters

nbformat = pytest.importorskip("nbformat", reason="notebook extra not installed: pip install -e .[notebooks]")
nbclient = pytest.importorskip("nbclient", reason="notebook extra not installed: pip install -e .[notebooks]")
pytest.importorskip("ipykernel", reason="notebook extra not installed: pip install -e .[notebooks]")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# notebooks whose point is a picture: they must produce at least one PNG (a figure that fails to render
# as an image, e.g. without the inline backend, shows up only as "<Figure ...>" text)
DRAWS = {"01_data", "02_components", "03_train"}
CELL_TIMEOUT = 600  # seconds for one cell on a slow shared CI machine; the notebooks take far less
# notebooks with a `TASK` switch run once more per segmentation task (the default run is instance), and must show
# that task's data or scores (text of their outputs)
TASK_RUNS = {"01_data": {"panoptic": ("panoptic.json", "category_id", "sky"),
                         "semantic": ("ground", "pixels", "class regions")},
             "03_train": {"panoptic": ("joint PQ", "PQ stuff", "tone accuracy", "mIoU"),
                          "semantic": ("mIoU", "fwIoU", "pACC")}}
CASES = [(p, None) for p in NOTEBOOKS] + [(p, t) for p in NOTEBOOKS for t in TASK_RUNS.get(p.stem, {})]


def parameters_cell(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise AssertionError(f"expected exactly one cell tagged 'parameters', found {len(tagged)}")
    return tagged[0]


def inject_parameters(nb, values: dict) -> None:
    """Insert a cell tagged `injected-parameters` after the `parameters` cell assigning `values` (only names
    the parameters cell defines, so a typo here cannot silently add a variable)."""
    i = parameters_cell(nb)
    source = nb.cells[i].source
    names = {line.split("=")[0].strip() for line in source.splitlines() if "=" in line and not line.startswith("#")}
    lines = [f"{k} = {v!r}" for k, v in values.items() if k in names]
    if lines:
        cell = nbformat.v4.new_code_cell("# injected by tests/test_notebooks.py\n" + "\n".join(lines))
        cell.metadata["tags"] = ["injected-parameters"]
        cell["id"] = "injected-parameters"
        nb.cells.insert(i + 1, cell)


def test_there_are_notebooks_and_each_has_parameters():
    names = [p.stem for p in NOTEBOOKS]
    for expected in ("01_data", "02_components", "03_train", "04_inspect_queries"):
        assert expected in names
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        parameters_cell(nb)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
            f"{path.name} is committed with outputs; clear them (they go stale and bloat diffs)"


def test_parameter_injection_overrides_only_known_names():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("A = 1\nB = 'x'"), nbformat.v4.new_code_cell("print(A)")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    inject_parameters(nb, {"A": 5, "C": 7})
    assert nb.cells[1].source.endswith("A = 5")
    assert "C" not in nb.cells[1].source


def test_task_switch_notebooks_define_task():
    for path in NOTEBOOKS:
        if path.stem in TASK_RUNS:
            nb = nbformat.read(path, as_version=4)
            assert 'TASK = "instance"' in nb.cells[parameters_cell(nb)].source, path.name


@pytest.mark.parametrize("path,task", CASES, ids=[p.stem + (f"-{t}" if t else "") for p, t in CASES])
def test_notebook_executes(path, task, tmp_path):
    workdir = tmp_path / "nb"
    workdir.mkdir()
    shutil.copy(path, workdir / path.name)
    nb = nbformat.read(workdir / path.name, as_version=4)
    inject_parameters(nb, small_parameters(path.stem, tmp_path, task))
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{e}")
    finally:
        nbformat.write(nb, workdir / path.name)  # executed copy, for a look after a failure
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert any(o.output_type in ("display_data", "execute_result") for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", [])), f"{path.name} showed nothing"
    if path.stem in DRAWS:
        assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", [])), f"{path.name} drew no image"
    if task:
        text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for c in nb.cells
                         if c.cell_type == "code" for o in c.get("outputs", []))
        missing = [word for word in TASK_RUNS[path.stem][task] if word not in text]
        assert not missing, f"{path.name} with TASK={task!r} showed nothing of {missing}"
