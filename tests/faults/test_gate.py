"""Gate refusal on the fleet: a floor above reachable accuracy changes no host."""

from __future__ import annotations

import re

from .conftest import HOSTS, Fleet


def test_refused_gate_changes_no_host_and_states_the_numbers(fleet: Fleet) -> None:
    before = fleet.digest()
    active = fleet.assert_one_version()

    run = fleet.play("retrain.yml", "-e", "quantshift_min_accuracy=0.99")
    assert run.rc != 0
    refused = re.search(r"Deployment refused: (.*?)\(floor ([\d.]+), incumbent ([\d.]+|None),"
                        r"\s+candidate ([\d.]+)\)", run.out, re.S)
    assert refused, run.out
    floor, candidate = float(refused[2]), float(refused[4])
    assert floor == 0.99
    assert 0 < candidate < floor
    # the candidate's number is the one the training reported
    reported = re.search(r"Test Accuracy: ([\d.]+)", run.out)
    assert reported and abs(float(reported[1]) - candidate) < 5e-4, run.out
    assert "Retrain stopped" in run.out

    # no host changed: models/ (active, metadata, backups, staging) byte-identical
    assert fleet.digest() == before
    assert fleet.assert_one_version() == active
    for h in HOSTS:
        assert not (fleet.root(h) / "models/.operation.lease").exists()
    assert not fleet.artifacts.exists() or not any(fleet.artifacts.iterdir())
