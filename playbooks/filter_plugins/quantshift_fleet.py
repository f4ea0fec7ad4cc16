# Copyright: QuantShift
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters deciding fleet questions in Python, exposed to Jinja.

``quantshift_fleet_problems``: the fleet check of retrain.yml (``quantshift_ml.ops.fleet``).
``quantshift_ab_decision``: the automatic A/B fallback of ab_guard.yml
(``quantshift_ml.monitoring.ab_report.fallback_decision``).
``quantshift_controller`` and ``quantshift_lease_takeover``: who this controller run
is, and whether a lease refusing it was left by a dead run of this control node
(tasks/lease.yml; ``quantshift_ml.store.lease``). Filters run on the controller,
in a worker forked from ansible-playbook, which is what they rely on.
"""

from __future__ import annotations


def _fleet_problems(hostvars, hosts):
    from quantshift_ml.ops.fleet import from_hostvars

    return from_hostvars(hostvars, hosts)


def _ab_decision(reports, min_accuracy=None, min_samples=20):
    from quantshift_ml.monitoring.ab_report import fallback_decision

    floor = None if min_accuracy in (None, "") else float(min_accuracy)
    return fallback_decision(dict(reports), floor, int(min_samples))


def _controller(_purpose=None):
    from quantshift_ml.store.lease import controller_identity

    return controller_identity()


def _lease_takeover(held, controller):
    from quantshift_ml.store.lease import dead_holder

    return dead_holder(dict(held) if held else None, controller["controller_host"])


class FilterModule:
    def filters(self):
        return {"quantshift_fleet_problems": _fleet_problems,
                "quantshift_ab_decision": _ab_decision,
                "quantshift_controller": _controller,
                "quantshift_lease_takeover": _lease_takeover}
