"""The custom modules' DOCUMENTATION, EXAMPLES and RETURN parse and match the argument spec."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _literals(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    return {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def _spec_keys(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "argument_spec":
            assert isinstance(node.value, ast.Call)
            return {kw.arg for kw in node.value.keywords if kw.arg}
    raise AssertionError("no argument_spec")


@pytest.mark.parametrize("name", ["quantshift_train", "quantshift_model"])
def test_docs_parse_and_cover_every_option(name: str) -> None:
    path = REPO / "library" / f"{name}.py"
    lit = _literals(path)
    doc = yaml.safe_load(lit["DOCUMENTATION"])
    examples = yaml.safe_load(lit["EXAMPLES"])
    returns = yaml.safe_load(lit["RETURN"])
    assert doc["module"] == name
    assert set(doc["options"]) == _spec_keys(path)
    assert doc["attributes"]["check_mode"]["support"] in {"full", "partial"}
    assert all(isinstance(t, dict) and "name" in t for t in examples)
    for task in examples:
        args = task.get(name) or {}
        assert set(args) <= set(doc["options"]), task["name"]
    assert all("description" in v and "returned" in v for v in returns.values())
