"""The service unit's command line as Ansible renders it from the role's template.

Why: the unit is the one place where the service learns where its market data
comes from; a csv source without its file is a service that never starts on
every host of the fleet. Rendered on the controller (no systemd touched).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles/quantshift_service"
BIN = Path(sys.executable).parent


def _play(tmp_path: Path, tasks: list[dict], role_vars: dict, *extra: str
          ) -> subprocess.CompletedProcess[str]:
    # the role's defaults derive from the fleet's (playbooks/group_vars/all.yml)
    fleet = yaml.safe_load((REPO / "playbooks/group_vars/all.yml").read_text())
    defaults = {**fleet, **yaml.safe_load((ROLE / "defaults/main.yml").read_text())}
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump([{
        "name": "Render", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {**defaults, **role_vars,
                 "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": tasks}]))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(book), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def _exec_start(tmp_path: Path, **role_vars: str) -> str:
    unit = tmp_path / "unit.service"
    run = _play(tmp_path, [{"name": "Render the unit", "ansible.builtin.template": {
        "src": str(ROLE / "templates/quantshift-regime.service.j2"), "dest": str(unit)}}],
        role_vars)
    assert run.returncode == 0, run.stdout + run.stderr
    return next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))


@pytest.mark.parametrize(("source", "data", "tail"), [
    ("csv", "/srv/market/spy.csv", "--source csv --symbol SPY --data /srv/market/spy.csv"),
    ("bundled", "/srv/market/spy.csv", "--source bundled --symbol SPY"),
    ("yfinance", "", "--source yfinance --symbol SPY"),
])
def test_the_unit_passes_the_data_file_only_for_a_csv_source(tmp_path: Path, source: str,
                                                               data: str, tail: str) -> None:
    line = _exec_start(tmp_path, quantshift_service_source=source,
                       quantshift_service_data=data)
    assert line.endswith(tail), line


def test_the_role_refuses_a_csv_source_without_its_file_before_touching_the_unit(
        tmp_path: Path) -> None:
    run = _play(tmp_path, [{"name": "Install", "ansible.builtin.include_role": {
        "name": "quantshift_service", "tasks_from": "install.yml"}}],
        {"quantshift_service_source": "csv", "quantshift_service_data": ""},
        "--check")  # were the check gone, check mode keeps /etc/systemd untouched
    assert run.returncode != 0
    assert "quantshift_service_data is empty" in run.stdout, run.stdout
    assert "Install the service unit" not in run.stdout
