"""The custom modules run through Ansible: the argument spec they really build (with
module_utils' common options) is the one ``ansible-doc`` documents (with the doc
fragments), their examples use only documented options, and the package's errors
come back as ``fail_json`` with the CLI's error type and exit code."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
       "PYTHONWARNINGS": "ignore"}
MODULES = ["quantshift_train", "quantshift_model"]


def _doc(name: str) -> dict:
    out = subprocess.run([str(BIN / "ansible-doc"), "--json", "-M", str(REPO / "library"), name],
                         env=ENV, capture_output=True, text=True, check=True).stdout
    return json.loads(out)[name]["doc"]


def _run(tmp_path: Path, name: str, args: dict, check: bool = False) -> dict:
    """One task of module ``name`` on localhost; its registered result."""
    out = tmp_path / "result.json"
    play = [{"hosts": "localhost", "gather_facts": False,
             "vars": {"ansible_python_interpreter": sys.executable},
             "tasks": [{"name": "Run the module", name: args, "register": "r",
                        "ignore_errors": True, "check_mode": check},
                       {"name": "Keep the result", "ansible.builtin.copy": {
                           "content": "{{ r | to_json }}", "dest": str(out)},
                        "check_mode": False}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(tmp_path / "play.yml")], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300, check=False)
    assert out.exists(), proc.stdout + proc.stderr
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", MODULES)
def test_the_argument_spec_is_the_documented_one(name: str, tmp_path: Path) -> None:
    doc = _doc(name)
    res = _run(tmp_path, name, {"quantshift_no_such_option": 1, "state": "inspected"}
               if name == "quantshift_model" else {"quantshift_no_such_option": 1})
    assert res["failed"], res
    supported = re.search(r"Supported parameters include: (.*)\.$", res["msg"])
    assert supported, res["msg"]
    assert set(supported[1].split(", ")) == set(doc["options"])
    assert doc["attributes"]["check_mode"]["support"] in {"full", "partial"}
    assert all("description" in v for v in doc["options"].values())


@pytest.mark.parametrize("name", MODULES)
def test_examples_and_returns_parse_and_use_documented_options(name: str) -> None:
    tree = ast.parse((REPO / "library" / f"{name}.py").read_text())
    lit = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
           for t in node.targets if isinstance(t, ast.Name)
           and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
    options = set(_doc(name)["options"])
    for task in yaml.safe_load(lit["EXAMPLES"]):
        assert "name" in task
        assert set(task.get(name) or {}) <= options, task["name"]
    returns = yaml.safe_load(lit["RETURN"])
    assert all("description" in v and "returned" in v for v in returns.values())


def test_check_mode_is_the_store_dry_run(tmp_path: Path) -> None:
    root = tmp_path / "store"
    res = _run(tmp_path, "quantshift_model",
               {"state": "inspected", "root": str(root), "keys": str(tmp_path / "keys")},
               check=True)
    assert not res.get("failed"), res
    assert res["changed"] is False and res["diagnosis"]["active"]["state"] == "missing"
    res = _run(tmp_path, "quantshift_model",
               {"state": "pruned", "root": str(root), "keys": str(tmp_path / "keys")},
               check=True)
    assert res["changed"] is False and res["pruned"] == []
    assert not (root / "models").exists()  # a dry run creates nothing, not even the lock


def test_package_errors_map_to_fail_json_with_type_and_exit_code(tmp_path: Path) -> None:
    res = _run(tmp_path, "quantshift_model",
               {"state": "packed", "path": str(tmp_path), "version": "not-a-version"})
    assert res["failed"] and res["error_type"] == "UsageError" and res["exit_code"] == 2, res
    res = _run(tmp_path, "quantshift_model",
               {"state": "packed", "path": str(tmp_path), "version": "20261124-020000"})
    assert res["failed"] and res["error_type"] == "IntegrityError", res
    assert res["exit_code"] == 4 and "model file missing" in res["msg"]
