"""Batched rollout on a four-host local fleet: canary, then the other standbys together.

Why: with ``quantshift_rollout_serial`` batches, hosts of one batch are deployed
side by side, so a failure inside a batch must still restore only the failing
host, keep the hosts that passed, and never reach the primary.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, Fleet

STANDBYS = ("standby1", "standby2", "standby3")


@pytest.fixture(scope="module")
def fleet4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Path]]:
    base = tmp_path_factory.mktemp("fleet4")
    inv = base / "inventory"
    inv.mkdir()
    (inv / "group_vars").symlink_to(REPO / "inventory/local/group_vars")
    hosts = {"quantshift": {"children": {
        "quantshift_primary": {"hosts": {"primary": None}},
        "quantshift_standby": {"hosts": dict.fromkeys(STANDBYS)},
    }}}
    (inv / "hosts.yml").write_text(json.dumps(hosts))
    yield Fleet(base), inv / "hosts.yml"


@pytest.fixture()
def stale_health(fleet4: tuple[Fleet, Path]) -> Iterator[str]:
    """A /healthz that keeps reporting standby3's current sha (a service that never reloads)."""
    fleet, _ = fleet4
    old_sha = fleet.meta("standby3")["sha256"]

    class Stale(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ok", "sha256": old_sha}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stale)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def _batches(out: str) -> list[list[str]]:
    """Hosts of each play of the standby rollout, in order, from the task headers."""
    plays = re.split(r"^PLAY \[", out, flags=re.M)[1:]
    found = []
    for play in plays:
        if play.startswith("Roll the release out to the standby hosts"):
            stage = play.split("TASK [Stage the release with checksums]", 1)
            if len(stage) == 2:
                found.append(sorted(set(re.findall(r"^\w+: \[(\w+)\]", stage[1].split(
                    "TASK [", 1)[0], flags=re.M))))
    return found


def test_default_batches_are_a_canary_then_the_rest(fleet4: tuple[Fleet, Path]) -> None:
    fleet, inv = fleet4
    assert fleet.play("site.yml", "-i", str(inv)).rc == 0
    run = fleet.play("retrain.yml", "-i", str(inv))
    assert run.rc == 0, run.out
    assert _batches(run.out) == [["standby1"], ["standby2", "standby3"]], run.out
    shas = {h: fleet.active_sha(h) for h in ("primary", *STANDBYS)}
    assert len(set(shas.values())) == 1, shas


def test_a_failure_inside_a_batch_restores_that_host_only(
        fleet4: tuple[Fleet, Path], stale_health: str) -> None:
    fleet, inv = fleet4
    before = {h: fleet.active_sha(h) for h in ("primary", *STANDBYS)}
    backups3 = sorted(p.name for p in (fleet.root("standby3") / "models/backups").iterdir())
    host_vars = inv.parent / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / "standby3.yml").write_text(
        json.dumps({"quantshift_service_url": stale_health, "quantshift_health_timeout": 4}))
    try:
        run = fleet.play("retrain.yml", "-i", str(inv))
    finally:
        (host_vars / "standby3.yml").unlink()
    assert run.rc != 0
    assert "failed on standby3" in run.out and "restored" in run.out, run.out
    new = fleet.meta("standby1")["sha256"]
    assert new != before["standby1"]
    # The canary and standby3's batch mate run the release; standby3 is back on
    # its model with the same backups; the primary was never reached.
    assert fleet.active_sha("standby1") == fleet.active_sha("standby2") == new
    assert fleet.active_sha("standby3") == before["standby3"]
    assert sorted(p.name for p in (fleet.root("standby3") / "models/backups").iterdir()) \
        == backups3
    assert fleet.active_sha("primary") == before["primary"]
    assert "Roll the release out to the primary" not in run.out
    # standby3's whole rescue ran, the lease release included.
    assert not (fleet.root("primary") / "models/.operation.lease").exists()

    # The split fleet is not retrained (the check names the fix) ...
    refused = fleet.play("retrain.yml", "-i", str(inv))
    assert refused.rc != 0 and "hosts disagree" in refused.out, refused.out
    version = fleet.meta("standby1")["version"]
    assert f"quantshift_release_version={version}" in refused.out
    # ... the named fix, one host at a time on request: the repaired fleet converges.
    again = fleet.play("deploy.yml", "-i", str(inv), "-e", f"quantshift_release_version={version}",
                       "-e", '{"quantshift_rollout_serial": 1}')
    assert again.rc == 0, again.out
    assert _batches(again.out) == [["standby1"], ["standby2"], ["standby3"]], again.out
    assert len({fleet.active_sha(h) for h in ("primary", *STANDBYS)}) == 1
