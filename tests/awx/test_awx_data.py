"""The AWX job templates and schedules kept as data are consistent with the repo."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from dateutil.rrule import rrulestr

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = yaml.safe_load((REPO / "awx/job_templates.yml").read_text())
FLEET_VARS = ("playbooks/group_vars/all.yml", "inventory/production/group_vars/quantshift.yml")
"""The production fleet's variables: the fleet defaults, then the inventory's overrides."""
SCHEDULES = yaml.safe_load((REPO / "awx/schedules.yml").read_text())


def _playbook_text(playbook: str) -> str:
    """The playbook and everything it imports or includes (tasks, templates)."""
    text = (REPO / playbook).read_text()
    for ref in re.findall(r"(?:import_playbook|include_tasks):\s*(\S+)", text):
        path = (REPO / playbook).parent / ref
        if path.exists():
            text += path.read_text()
    return text


def test_every_template_points_at_an_existing_playbook() -> None:
    names = set()
    for jt in TEMPLATES["quantshift_awx_job_templates"]:
        assert (REPO / jt["playbook"]).is_file(), jt["playbook"]
        names.add(jt["name"])
    assert {"quantshift-retrain", "quantshift-rollback", "quantshift-monitor"} <= names


def test_survey_variables_are_read_by_the_playbooks() -> None:
    inventories = "".join((REPO / f).read_text() for f in FLEET_VARS)
    for jt in TEMPLATES["quantshift_awx_job_templates"]:
        if not jt["survey_enabled"]:
            continue
        text = _playbook_text(jt["playbook"])
        for q in jt["survey_spec"]["spec"]:
            assert q["variable"] in text or q["variable"] in inventories, (jt["name"], q)
            assert q["type"] in {"text", "integer", "float", "multiplechoice", "password"}
            if q["type"] == "multiplechoice":
                assert q["default"] in q["choices"]


def test_fleet_changing_jobs_never_run_concurrently() -> None:
    for jt in TEMPLATES["quantshift_awx_job_templates"]:
        if jt["name"] in {"quantshift-retrain", "quantshift-rollback", "quantshift-site",
                          "quantshift-ab-guard"}:
            assert jt["concurrent_jobs_enabled"] is False


def test_schedules_parse_and_match_the_cron_times() -> None:
    names = {jt["name"] for jt in TEMPLATES["quantshift_awx_job_templates"]}
    by_template = {}
    for sch in SCHEDULES["quantshift_awx_schedules"]:
        assert sch["unified_job_template"] in names
        rule = rrulestr(sch["rrule"].replace(" RRULE:", "\nRRULE:"))
        first = next(iter(rule))
        by_template[sch["unified_job_template"]] = first
    retrain = by_template["quantshift-retrain"]
    assert (retrain.weekday(), retrain.hour, retrain.minute) == (6, 2, 0)  # Sunday 02:00
    monitor = by_template["quantshift-monitor"]
    assert (monitor.hour, monitor.minute) == (18, 0)
    guard = by_template["quantshift-ab-guard"]  # the cron default of roles/quantshift_cron
    assert (guard.hour, guard.minute) == (21, 30)


def test_fleet_changing_schedules_never_run_inside_the_production_freeze() -> None:
    """Each run of the retrain schedule in its first year falls outside the change freeze
    of inventory/production (sessions ± margin and its extra windows)."""
    import pandas as pd

    from quantshift_ml.ops.freeze import FreezeConfig, status

    prod = {k: v for f in FLEET_VARS for k, v in yaml.safe_load((REPO / f).read_text()).items()}
    assert prod["quantshift_freeze_enabled"]
    cfg = FreezeConfig.from_settings(calendar=prod["quantshift_freeze_calendar"],
                                     margin=prod["quantshift_freeze_margin"],
                                     extra=[e if isinstance(e, str) else json.dumps(e)
                                            for e in prod["quantshift_freeze_extra"]], env={})
    fleet_changing = {jt["name"] for jt in TEMPLATES["quantshift_awx_job_templates"]
                      if jt["playbook"] in ("playbooks/retrain.yml", "playbooks/deploy.yml")}
    checked = 0
    for sch in SCHEDULES["quantshift_awx_schedules"]:
        if sch["unified_job_template"] not in fleet_changing:
            continue
        rule = rrulestr(sch["rrule"].replace(" RRULE:", "\nRRULE:"))
        for run in list(rule[:53]):
            st = status(cfg, pd.Timestamp(run).tz_convert("UTC"))
            assert not st["frozen"], (sch["name"], run, st["reason"])
            checked += 1
    assert checked == 53
