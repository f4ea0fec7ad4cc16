# Copyright: QuantShift
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``quantshift_fleet_problems``: the fleet check of retrain.yml, decided in Python.

The logic lives in ``quantshift_ml.fleet``; this plugin only exposes it to Jinja.
"""

from __future__ import annotations


def _fleet_problems(hostvars, hosts):
    from quantshift_ml.fleet import from_hostvars

    return from_hostvars(hostvars, hosts)


class FilterModule:
    def filters(self):
        return {"quantshift_fleet_problems": _fleet_problems}
