"""Order of the verifier's tests: every read-only check first, the fleet operations last.

Tests marked ``fleet_operations`` change the hosts (a second retrain, a rollback,
broken and forged releases, a cut link), and the checks of the provisioned hosts
must see them as ``converge`` left them: the marked tests run after all the
others, in their own file order, whatever the files are called.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fleet_operations: changes the hosts; runs after every other test")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # a stable sort: unmarked tests keep their order, then the marked ones keep theirs
    items.sort(key=lambda item: item.get_closest_marker("fleet_operations") is not None)
