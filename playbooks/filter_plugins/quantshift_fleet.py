# Copyright: QuantShift
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters deciding fleet questions in Python, exposed to Jinja.

``quantshift_fleet_problems``: the fleet check of retrain.yml (``quantshift_ml.fleet``).
``quantshift_ab_decision``: the automatic A/B fallback of ab_guard.yml
(``quantshift_ml.ab_report.fallback_decision``).
"""

from __future__ import annotations


def _fleet_problems(hostvars, hosts):
    from quantshift_ml.fleet import from_hostvars

    return from_hostvars(hostvars, hosts)


def _ab_decision(reports, min_accuracy=None, min_samples=20):
    from quantshift_ml.ab_report import fallback_decision

    floor = None if min_accuracy in (None, "") else float(min_accuracy)
    return fallback_decision(dict(reports), floor, int(min_samples))


class FilterModule:
    def filters(self):
        return {"quantshift_fleet_problems": _fleet_problems,
                "quantshift_ab_decision": _ab_decision}
