"""Gate refusal on the fleet: a floor above reachable accuracy changes no host."""

from __future__ import annotations

import re

from .conftest import HOSTS, Fleet

# a floor the candidate cannot reach: on a 2011 holdout (August's turbulence) no
# model scores 0.99, while the bundled data's last holdout is too easy (1.000)
REFUSE = ("-e", "quantshift_min_accuracy=0.99", "-e", "quantshift_as_of=2011-10-31")


def test_refused_gate_changes_no_host_and_states_the_numbers(fleet: Fleet) -> None:
    before = fleet.digest()
    active = fleet.assert_one_version()

    run = fleet.play("retrain.yml", *REFUSE)
    assert run.rc != 0
    refused = re.search(r"Deployment refused: (.*?)\(floor ([\d.]+), incumbent ([\d.]+|None),"
                        r".*?candidate ([\d.]+)\)", run.out, re.S)
    assert refused, run.out
    floor, candidate = float(refused[2]), float(refused[4])
    assert floor == 0.99
    assert 0 < candidate < floor
    # the candidate's number is the one the training reported (hmm gates on balanced)
    reported = re.search(r"Balanced Accuracy: ([\d.]+)", run.out)
    assert reported and abs(float(reported[1]) - candidate) < 5e-4, run.out
    assert "Retrain stopped" in run.out

    # no host changed: models/ (active, metadata, backups, staging) byte-identical
    assert fleet.digest() == before
    assert fleet.assert_one_version() == active
    for h in HOSTS:
        assert not (fleet.root(h) / "models/.operation.lease").exists()
    assert not fleet.artifacts.exists() or not any(fleet.artifacts.iterdir())
