"""Fleet-level decisions made from each host's ``doctor`` report.

A retrain rolls one model out to every host. Started against a fleet whose
hosts disagree (a rollout stopped half-way) or where one host is broken, it
would gate against the wrong incumbent and leave the fleet split further, so
``retrain.yml`` refuses before touching any host and names each host's state.
A host without any model (a new standby) is not a problem: the rollout gives
it one. A host that did not answer is left to the rollout's own handling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def fleet_problems(reports: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """One line per problem, naming the host, what is wrong and the fix; [] when sound."""
    lines: list[str] = []
    versions: dict[str, str] = {}
    for host, diag in reports.items():
        if not diag:
            continue
        for p in diag.get("problems", []):
            # a new host gets a model from the rollout; a bad backup is never used
            # (rollbacks skip it) and is pruned by the next promotions
            if p.get("kind") not in ("no-model", "backup"):
                lines.append(f"{host}: {p['problem']} (fix: {p['fix']})")
        active = diag.get("active") or {}
        if active.get("state") == "ok" and active.get("version"):
            versions[host] = str(active["version"])
    if len(set(versions.values())) > 1:
        runs = ", ".join(f"{h} runs {v}" for h, v in sorted(versions.items()))
        newest = max(versions.values())
        lines.append(f"hosts disagree ({runs}): finish the interrupted rollout with "
                     f"ansible-playbook playbooks/deploy.yml -e quantshift_release_version={newest}"
                     ", or roll back to one version with playbooks/rollback.yml "
                     "-e quantshift_rollback_to=VERSION")
    return lines


def from_hostvars(hostvars: Mapping[str, Any], hosts: Iterable[str],
                  var: str = "quantshift_inspect") -> list[str]:
    """``fleet_problems`` of the ``state=inspected`` results registered as ``var``."""
    reports: dict[str, Mapping[str, Any] | None] = {}
    for host in hosts:
        result = hostvars[host].get(var) or {}
        reports[host] = result.get("diagnosis") if isinstance(result, Mapping) else None
    return fleet_problems(reports)
