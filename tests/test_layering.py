"""Import rules between the package's layers, checked by parsing every module's imports (top-level and inside
functions alike: a lazy import is still a dependency) so they stay true:

- `workbench.engine` (training, evaluation, the pipeline) never imports `workbench.inspect` (notebook and widget
  tooling); what both draw lives below them in `workbench.drawing`;
- `workbench.metrics` imports only data, errors and config; `workbench.config`, `workbench.errors` import nothing of
  ours, `workbench.data` only those two;
- no two modules import each other, directly or through others (e.g. d2/config.py <-> d2/modeling.py,
  inspect/draw.py <-> inspect/figures.py before they were split).
"""
import ast
from pathlib import Path

import workbench

ROOT = Path(workbench.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: workbench modules it imports}; `from pkg import name` points at pkg.name when that is a module."""
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_lazy_and_package_imports():
    graph = import_graph()
    assert "workbench.drawing.loss_curve" in graph["workbench.engine.pipeline"]  # imported inside a function
    assert "workbench.model.meta_arch" in graph["workbench.model"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_engine_does_not_import_inspect():
    graph = import_graph()
    bad = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.startswith("workbench.engine")
                 for t in targets if t.startswith("workbench.inspect"))
    assert not bad, f"workbench.engine must not import workbench.inspect (move shared code to workbench.drawing): {bad}"


def test_metrics_sit_below_the_engine():
    """`workbench.metrics` (PQ, semantic scores, ...) is imported by the engine, the ablation runner and the
    inspector alike, so it imports only the package root and itself, `workbench.data` (io, problems), `errors` and
    `config`: never the model, the engine or anything above them."""
    allowed = ("workbench.metrics", "workbench.data", "workbench.errors", "workbench.config")
    graph = import_graph()
    assert any(m.startswith("workbench.metrics.") for m in graph)
    bad = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.startswith("workbench.metrics")
                 for t in targets if t != "workbench" and not t.startswith(allowed))
    assert not bad, f"workbench.metrics imports a higher layer: {bad}"


# The bottom layers, each with the only package modules it may import besides its own (and the package root):
# configuration and errors import nothing of ours, data tools only them, metrics (test above) also data.
BOTTOM_LAYERS = {
    "workbench.errors": (),
    "workbench.config": (),
    "workbench.data": ("workbench.config", "workbench.errors"),
}


def test_bottom_layers_import_nothing_above_them():
    """config/ is imported by everything (model, data, engine, d2, ...), so importing any of them from it (e.g.
    model/backbones/build.py's BACKBONE_NAMES instead of config/model.py's own BACKBONES) would tie the config to
    torch and make a cycle waiting to happen; likewise data/ below metrics/ and the engine."""
    def within(name: str, package: str) -> bool:  # workbench.config.model is within workbench.config, config_file not
        return name == package or name.startswith(package + ".")

    graph = import_graph()
    bad = []
    for layer, allowed in BOTTOM_LAYERS.items():
        assert any(within(m, layer) for m in graph), layer
        bad += sorted(f"{m} -> {t}" for m, targets in graph.items() if within(m, layer)
                      for t in targets if t != "workbench" and not any(within(t, p) for p in (layer, *allowed)))
    assert not bad, f"a bottom layer imports a higher one: {bad}"


# Known cycles, each with why it is tolerated for now (a frozenset of module names); anything else fails.
KNOWN_CYCLES: set[frozenset[str]] = set()  # none today: backbones/ broke the backbone <-> swin one


def test_no_import_cycles():
    found = [c for c in cycles(import_graph()) if frozenset(c) not in KNOWN_CYCLES]
    assert not found, f"modules that import each other (directly or through others): {found}"
