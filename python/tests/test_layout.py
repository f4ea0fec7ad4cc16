"""The package's layout holds: lifecycle folders in layer order, no import cycles.

Every ``import`` of the package's own modules is read from the source (the AST:
module level, inside functions and under ``TYPE_CHECKING`` alike, since a
type-only import still ties two modules together for a reader). A lower layer
never imports a higher one, and the module graph has no cycle, so a change that
breaks either fails here with the offending imports named.
"""

from __future__ import annotations

import ast
import io
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import quantshift_ml

PACKAGE = Path(quantshift_ml.__file__).parent
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "defaults"),
    ("store",),
    ("data",),
    ("model",),
    ("outcomes",),
    ("training",),
    ("champion",),
    ("walkforward",),
    ("insight",),
    ("serving",),
    ("monitoring",),
    ("ops",),
    ("console",),
    ("cli", "__main__"),
)
"""Lowest first: a module may import its own layer's and lower layers' modules."""
TOP_LEVEL = {"__init__", "__main__", "defaults", "errors"}


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _targets(module: str, path: Path, node: ast.AST, known: dict[str, Path]) -> Iterator[str]:
    """The package modules one import statement names (``from x import submodule`` too)."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names if a.name.split(".")[0] == "quantshift_ml")
        return
    if not isinstance(node, ast.ImportFrom):
        return
    base = node.module or ""
    if node.level:
        here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] != "quantshift_ml":
        return
    for alias in node.names:
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports (the nearest existing module of a name)."""
    known = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _targets(module, path, node, known):
                while target not in known:
                    target = target.rsplit(".", 1)[0]
                if target != module:
                    graph[module].add(target)
    return graph


def layer_of(module: str) -> int:
    """The layer index of a module: its first name below the package, ``None`` for the root."""
    parts = module.split(".")
    if len(parts) == 1:
        return 0  # quantshift_ml itself: __version__ and REGIMES, importable from anywhere
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    raise AssertionError(f"{module}: not in any layer of test_layout.LAYERS; put its folder "
                         "in the lifecycle order")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} (layer {LAYERS[layer_of(m)][0]}) imports {t} "
                  f"(layer {LAYERS[layer_of(t)][0]})"
                  for m, ts in graph.items() for t in ts if layer_of(t) > layer_of(m))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_only_the_four_modules_stay_at_the_top() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL, f"modules at the package's top level: {sorted(top - TOP_LEVEL)}"


def test_every_folder_says_what_it_owns_and_may_import() -> None:
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init}: its docstring must say what the folder may import"
        layer_of(f"quantshift_ml.{init.parent.name}")


def test_lower_layers_never_import_higher_ones() -> None:
    assert upward_imports(import_graph()) == []


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_check_catches_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    """The checks fail on a planted violation (so an empty result above means something)."""
    pkg = tmp_path / "quantshift_ml"
    for rel, text in {"__init__.py": "", "store/__init__.py": "",
                      "store/a.py": "from quantshift_ml.cli import b\n",
                      "cli/__init__.py": "", "cli/b.py": "def f():\n    from . import c\n",
                      "cli/c.py": "import quantshift_ml.cli.b\n"}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph = import_graph(pkg)
    assert upward_imports(graph) == [
        "quantshift_ml.store.a (layer store) imports quantshift_ml.cli.b (layer cli)"]
    assert cycles(graph) == [["quantshift_ml.cli.b", "quantshift_ml.cli.c"]]


def test_a_model_pickled_under_the_old_module_paths_still_loads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Releases written before the move name ``quantshift_ml.regimes``: the loader maps it."""
    import joblib

    from quantshift_ml.model import filterspec, regimes
    from quantshift_ml.store.compat import MOVED_MODULES, unpickle

    rule = regimes.RegimeRule()
    for old in MOVED_MODULES:  # aliases an earlier test's load left behind: as in a fresh process
        monkeypatch.delitem(sys.modules, old, raising=False)
    # pickle the objects as the old tree did: their classes under the old module names
    with pytest.MonkeyPatch.context() as old_tree:
        for old, module in (("quantshift_ml.regimes", regimes),
                            ("quantshift_ml.filterspec", filterspec)):
            assert MOVED_MODULES[old] == module.__name__
            old_tree.setitem(sys.modules, old, module)
        old_tree.setattr(regimes.RegimeRule, "__module__", "quantshift_ml.regimes")
        buf = io.BytesIO()
        joblib.dump({"rule": rule}, buf)
    content = buf.getvalue()
    assert b"quantshift_ml.regimes" in content and b"quantshift_ml.model" not in content
    assert "quantshift_ml.regimes" not in sys.modules  # the old names are gone again
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(content)  # what a plain unpickler makes of it
    loaded = unpickle(content)
    assert isinstance(loaded["rule"], regimes.RegimeRule)
    assert loaded["rule"].params() == rule.params()


def test_training_reads_top_to_bottom_as_one_recipe() -> None:
    """``operations.train``'s body is the recipe, its steps in order, each a call into a
    lower layer (the layer test above holds that none of them imports ``ops`` back)."""
    tree = ast.parse((PACKAGE / "ops/operations.py").read_text())
    train = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    calls = sorted(((n.lineno, n.col_offset, n.func) for n in ast.walk(train)
                    if isinstance(n, ast.Call) and isinstance(n.func, (ast.Name, ast.Attribute))),
                   key=lambda c: (c[0], c[1]))
    called = [f.id if isinstance(f, ast.Name) else f.attr  # type: ignore[attr-defined]
              for _, _, f in calls]
    steps = ["load", "check_history", "_training_lock", "_load_incumbent", "train_champion",
             "_decide", "_package"]
    positions = [called.index(step) for step in steps]
    assert positions == sorted(positions), called
    assert len(train.body) <= 15, "the recipe should fit on a screen"
