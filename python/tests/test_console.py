"""The console without a browser: login, CSRF, jobs, audit and the data each page shows.

The playbook runner is replaced by a recorder here (these are unit tests of the
web layer); ``tests/console/test_browser.py`` runs the real playbooks through
ansible-runner in a real browser.
"""

from __future__ import annotations

import json
import re
import stat
import sys
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
with warnings.catch_warnings():  # starlette 1.x prefers httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from quantshift_ml.console import auth, charts, jobs, pages
from quantshift_ml.console.app import create_app
from quantshift_ml.console.cli import passwd
from quantshift_ml.console.config import ConsoleConfig, check_tools, load
from quantshift_ml.console.snapshot import Snapshot
from quantshift_ml.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
STATUS = {"active": {"version": "20260101-000000", "sha256": "a" * 64, "file_sha256": "a" * 64,
                     "integrity": "ok", "age_days": 1.5, "labeler": "hmm"},
          "backups": [{"version": "20251201-000000", "sha256": "b" * 64}], "integrity": "ok"}


class Recorder:
    """Stands in for ansible-runner: records each job, reports facts like status.yml."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], bool]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, job: jobs.Job, config: ConsoleConfig) -> int:
        self.calls.append((job.kind, dict(job.extravars), job.check))
        self.release.wait(10)
        job.on_event({"event": "playbook_on_task_start",
                      "event_data": {"play": "p", "task": "Read the model store"}})
        for host in ("primary", "standby"):
            job.on_event({"event": "runner_on_ok", "event_data": {
                "host": host, "task": "Parse the status", "task_action": "set_fact",
                "res": {"ansible_facts": {"quantshift_status": STATUS}}}})
        return 0


@pytest.fixture()
def config(tmp_path: Path) -> ConsoleConfig:
    return ConsoleConfig(project=REPO, inventory=REPO / "inventory" / "local",
                         artifacts=tmp_path / "artifacts",
                         walkforward=REPO / "docs" / "walkforward",
                         state=tmp_path / "state", users={"alice": auth.hash_password(PASSWORD)},
                         secret="test-secret")


@pytest.fixture()
def runner() -> Recorder:
    return Recorder()


@pytest.fixture()
def client(config: ConsoleConfig, runner: Recorder) -> TestClient:
    return TestClient(create_app(config, runner), base_url="http://127.0.0.1")


def csrf(client: TestClient, path: str = "/login") -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert match, path
    return match.group(1)


def login(client: TestClient) -> str:
    r = client.post("/login", data={"csrf": csrf(client), "user": "alice", "password": PASSWORD})
    assert r.status_code == 200 and r.url.path == "/"
    return csrf(client, "/")


def wait_idle(client: TestClient) -> None:
    console = client.app.state.console  # type: ignore[attr-defined]
    for _ in range(200):
        if console.jobs.current is None:
            return
        time.sleep(0.02)
    raise AssertionError("job still running")


def audit_lines(config: ConsoleConfig) -> list[dict[str, Any]]:
    return [json.loads(x) for x in config.audit_log.read_text().splitlines()]


def test_password_hashes() -> None:
    stored = auth.hash_password("s3cret")
    assert auth.check_password("s3cret", stored) and not auth.check_password("other", stored)
    assert stored != auth.hash_password("s3cret")  # salted
    assert not auth.check_password("s3cret", "scrypt$broken")
    assert not auth.check_password("x", "plain-text")
    with pytest.raises(UsageError, match="QUANTSHIFT_CONSOLE_USER_bob is not a password hash"):
        auth.users_from_env({"QUANTSHIFT_CONSOLE_USER_bob": "hunter2"})
    assert auth.users_from_env({"QUANTSHIFT_CONSOLE_USER_bob": stored, "OTHER": "x"}) == \
        {"bob": stored}


def test_throttle_blocks_after_five_failures() -> None:
    t = auth.Throttle(limit=5, window=300)
    for k in range(5):
        assert not t.blocked("c", now=float(k))
        t.failed("c", now=float(k))
    assert t.blocked("c", now=10.0) and not t.blocked("other", now=10.0)
    assert not t.blocked("c", now=400.0)  # the window passed


def test_unauthenticated_requests_change_nothing(client: TestClient, runner: Recorder,
                                                 config: ConsoleConfig) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/jobs/x.json").status_code == 401
    for path in ("/train", "/rollback", "/fleet/refresh", "/fleet/monitor"):
        assert client.post(path, data={"csrf": "x"}).status_code == 403
    assert runner.calls == []
    assert "default-src 'self'" in r.headers["content-security-policy"]


def test_wrong_password_is_refused_and_audited(client: TestClient,
                                               config: ConsoleConfig) -> None:
    r = client.post("/login", data={"csrf": csrf(client), "user": "alice", "password": "nope"})
    assert r.status_code == 401 and "wrong user name or password" in r.text
    assert client.get("/", follow_redirects=False).status_code == 303
    assert audit_lines(config)[-1] | {"time": None} == {
        "time": None, "user": "alice", "action": "login", "result": "failed",
        "client": "testclient"}
    assert PASSWORD not in config.audit_log.read_text()


def test_login_needs_the_csrf_token(client: TestClient) -> None:
    client.get("/login")
    r = client.post("/login", data={"user": "alice", "password": PASSWORD})
    assert r.status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 303


def test_actions_need_a_valid_csrf_token(client: TestClient, runner: Recorder) -> None:
    token = login(client)
    for bad in ({}, {"csrf": ""}, {"csrf": token[:-1] + "x"}):
        assert client.post("/train", data=bad).status_code == 403
    assert runner.calls == []
    r = client.post("/train", data={"csrf": token, "floor": "0.8", "check": "on"})
    assert r.status_code == 200 and r.url.path.startswith("/jobs/")
    wait_idle(client)
    assert runner.calls[0] == ("retrain", {"quantshift_min_accuracy": 0.8}, True)
    assert runner.calls[1][0] == "status"  # the fleet is refreshed after every action


def test_train_now_is_audited_and_refreshes_the_fleet(client: TestClient, runner: Recorder,
                                                      config: ConsoleConfig) -> None:
    token = login(client)
    r = client.post("/train", data={"csrf": token})
    wait_idle(client)
    job = client.get(r.url.path + ".json").json()
    assert job["status"] == "successful" and job["done"] and job["rc"] == 0
    assert job["hosts_after"] == {h: {"version": "20260101-000000", "sha256": "a" * 64}
                                  for h in ("primary", "standby")}
    actions = [(x["user"], x["action"], x["result"]) for x in audit_lines(config)]
    assert actions[-2:] == [("alice", "retrain", "started"), ("alice", "retrain", "successful")]
    assert "20260101-000000" in client.get("/").text


def test_a_second_operation_is_refused_while_one_runs(client: TestClient, runner: Recorder,
                                                     config: ConsoleConfig) -> None:
    token = login(client)
    runner.release.clear()
    client.post("/train", data={"csrf": token})
    r = client.post("/rollback", data={"csrf": token, "to": "latest"})
    assert r.status_code == 409 and "is still running" in r.text
    runner.release.set()
    wait_idle(client)
    assert [c[0] for c in runner.calls] == ["retrain", "status"]
    refused = [x for x in audit_lines(config) if x["action"] == "rollback"]
    assert [x["result"] for x in refused] == ["refused"] and "still running" in refused[0]["reason"]


@pytest.mark.parametrize(("path", "form", "message"), [
    ("/train", {"floor": "abc"}, "is not a number"),
    ("/train", {"floor": "1.5"}, "is not between 0 and 1"),
    ("/train", {"as_of": "yesterday"}, "is not a date"),
    ("/rollback", {"to": "../../etc"}, "neither &#39;latest&#39; nor a version"),
])
def test_bad_form_input_is_refused(client: TestClient, runner: Recorder, path: str,
                                   form: dict[str, str], message: str) -> None:
    token = login(client)
    r = client.post(path, data={"csrf": token, **form})
    assert r.status_code == 400 and message in r.text
    assert runner.calls == []


def test_rollback_vars() -> None:
    assert jobs.rollback_vars("", False) == {"quantshift_rollback_to": "latest"}
    assert jobs.rollback_vars("20261117-020000", True) == {
        "quantshift_rollback_to": "20261117-020000", "quantshift_rollback_force": True}


def test_console_without_ansible_refuses_to_start_naming_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A venv with the package but not ansible-core: a clear error before anything runs."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(UsageError, match=r"missing: ansible, ansible-playbook: "
                                         r"pip install 'quantshift-ml\[console\]'"):
        load(REPO, None, None)
    (tmp_path / "bin").mkdir()
    for name in ("ansible", "ansible-playbook"):  # found on PATH when not beside python
        (tmp_path / "bin" / name).write_text("#!/bin/sh\n")
        (tmp_path / "bin" / name).chmod(0o755)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    assert check_tools() == tmp_path / "bin" / "ansible"


def test_job_folds_runner_events() -> None:
    job = jobs.Job(kind="retrain", user="alice", extravars={})
    job.on_event({"event": "playbook_on_task_start", "event_data": {"play": "Train", "task": "T"}})
    job.on_event({"event": "runner_on_start", "event_data": {"host": "primary"}})
    assert job.tasks[-1]["hosts"] == {"primary": "running"}
    job.on_event({"event": "runner_on_ok", "event_data": {
        "host": "primary", "task_action": "quantshift_train",
        "res": {"changed": True, "version": "V", "gate": {"passed": True}, "metrics": {}}}})
    assert job.tasks[-1]["hosts"] == {"primary": "changed"}
    assert job.train == {"version": "V", "gate": {"passed": True}, "metrics": {},
                         "changed": True}
    job.on_event({"event": "runner_on_failed", "event_data": {
        "host": "standby", "task": "Take the lease", "res": {"msg": "lease held by x"}}})
    job.on_event({"event": "runner_on_failed", "event_data": {
        "host": "standby", "task": "probe", "ignore_errors": True, "res": {"msg": "fine"}}})
    assert job.failures == [{"host": "standby", "task": "Take the lease",
                             "msg": "lease held by x"}]
    assert job.tasks[-1]["hosts"]["standby"] == "ignored"


def _artifact(base: Path, version: str, test: float, recall: float) -> None:
    d = base / version
    d.mkdir(parents=True)
    meta = {"version": version, "sha256": version[-1] * 64, "trained_at": "t",
            "labeler": {"name": "hmm"}, "onnx": {"sha256": "x", "parity": {"ok": True}},
            "gate": {"passed": True, "baseline": 0.7, "floor": 0.0, "baseline_name": "persistence"},
            "metrics": {"test_accuracy": test, "cv_accuracy": 0.8, "balanced_accuracy": 0.75,
                        "per_class": {"Bull": {"precision": 0.9, "recall": recall, "support": 3}},
                        "top_features": [{"feature": "atr_ratio", "importance": 0.4}]}}
    (d / f"regime_classifier_{version}.json").write_text(json.dumps(meta))


def test_versions_merge_the_controller_and_the_hosts(config: ConsoleConfig) -> None:
    _artifact(config.artifacts, "20260101-000000", 0.9, 0.8)
    _artifact(config.artifacts, "20260201-000000", 0.95, 0.85)
    (config.artifacts / "not-a-version").mkdir()
    snap = Snapshot(config.state)
    snap.save_status("now", {"primary": {"quantshift_status": STATUS}})
    ctx = pages.versions(config, snap)
    assert ctx["names"] == ["20251201-000000", "20260101-000000", "20260201-000000"]
    newest = ctx["versions"][0]
    assert newest["version"] == "20260201-000000" and newest["test_accuracy"] == 0.95
    assert ctx["versions"][1]["where"] == {"controller": "artifact", "primary": "active"}
    assert ctx["versions"][2]["where"] == {"primary": "backup"}
    assert 'data-series="test accuracy" data-x="20260201-000000"' in ctx["metric_chart"]
    assert 'data-series="Bull" data-x="20260101-000000"' in ctx["recall_chart"]
    cmp = pages.comparison(config, snap, "", "")["cmp"]
    assert (cmp["a"]["version"], cmp["b"]["version"]) == ("20260101-000000", "20260201-000000")
    row = next(m for m in cmp["metrics"] if m["key"] == "test_accuracy")
    assert (row["a"], row["b"]) == (0.9, 0.95)
    with pytest.raises(UsageError, match="not known"):
        pages.comparison(config, snap, "20990101-000000", "")


def test_fleet_flags_a_sha_mismatch_and_the_engine(config: ConsoleConfig) -> None:
    _artifact(config.artifacts, "20260101-000000", 0.9, 0.8)
    bad = json.loads(json.dumps(STATUS))
    bad["active"]["file_sha256"] = "c" * 64
    snap = Snapshot(config.state)
    snap.save_status("now", {"primary": {"quantshift_status": STATUS},
                             "standby": {"quantshift_status": bad}})
    rows = {r["host"]: r for r in pages.fleet(config, snap)["hosts"]}
    assert not rows["primary"]["sha_mismatch"] and rows["standby"]["sha_mismatch"]
    assert rows["primary"]["engine"].startswith("onnxruntime")
    assert rows["primary"]["backups"] == ["20251201-000000"]


def test_monitor_history_feeds_the_live_chart(config: ConsoleConfig) -> None:
    snap = Snapshot(config.state)
    for k, value in enumerate((0.8, 0.7)):
        report = {"status": "OK", "time": f"2026-01-0{k + 1}T00:00", "checks": [
            {"name": "live_accuracy", "status": "OK", "value": value, "message": "m"},
            {"name": "input_drift", "status": "OK", "value": 0.1, "message": "d",
             "features": [{"feature": "atr_ratio", "psi": 0.2, "ks": 0.1, "p_value": 0.5,
                           "drifted": False}]}]}
        snap.save_monitor(f"2026-01-0{k + 1}T00:00:00", {"primary": {"quantshift_monitor": report}})
    ctx = pages.monitoring(config, snap)
    assert ctx["runs"] == 2
    assert 'primary live_accuracy 2026-01-02T00:00: 0.700' in ctx["live_chart"]
    assert ctx["panels"]["primary"]["input_drift"]["features"][0]["feature"] == "atr_ratio"


def test_walkforward_page_reads_the_report(config: ConsoleConfig) -> None:
    ctx = pages.walkforward(config, None)
    assert ctx["chosen"] == "hmm_default" and ctx["models"][0] == "model"
    assert 'data-series="model" data-x="2008"' in ctx["by_year"]
    with pytest.raises(UsageError, match="no walk-forward report named"):
        pages.walkforward(config, "../../etc/passwd")


def test_walkforward_page_shows_the_champion_row_escaped(config: ConsoleConfig,
                                                         runner: Recorder,
                                                         tmp_path: Path) -> None:
    report = json.loads((REPO / "docs" / "walkforward" / "hmm_default.json").read_text())
    assert pages.walkforward(config, None)["models"][:2] == ["model", "champion"]
    evil = "<script>alert(1)</script>"
    policy = report["champion"]["policy"]
    policy["share_of_months"][evil] = 0.5
    report["champion"]["vs_family"][evil] = report["champion"]["vs_family"]["forest"]
    policy["record_months"] = evil
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "evil.json").write_text(json.dumps(report))
    client = TestClient(create_app(replace(config, walkforward=tmp_path / "wf"), runner),
                        base_url="http://127.0.0.1")
    login(client)
    page = client.get("/walkforward?report=evil").text
    assert 'id="wf-champion"' in page and 'id="wf-champion-vs"' in page
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert f"{report['champion']['balanced_accuracy']:.3f}" in page


def test_charts_escape_labels() -> None:
    svg = charts.line_chart("t<", ["<x>"], [charts.Series("a&b", [0.5])])
    assert "<x>" not in svg and "&lt;x&gt;" in svg and "a&amp;b" in svg


def test_no_page_renders_a_secret(client: TestClient, config: ConsoleConfig) -> None:
    login(client)
    stored = config.users["alice"]
    for path in ("/", "/versions", "/operations", "/walkforward", "/monitoring", "/audit"):
        text = client.get(path).text
        assert stored not in text and "test-secret" not in text and PASSWORD not in text


def test_passwd_writes_a_private_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    env = tmp_path / "console.env"
    assert passwd(env, "alice", generate=True, if_missing=False)["changed"]
    first = env.read_text()
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert passwd(env, "bob", generate=True, if_missing=True)["changed"] is False
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("pw\n"))
    passwd(env, "alice", generate=False, if_missing=False)
    lines = env.read_text().splitlines()
    assert sum(x.startswith("QUANTSHIFT_CONSOLE_USER_alice=") for x in lines) == 1
    assert [x for x in lines if x.startswith("QUANTSHIFT_CONSOLE_SECRET=")] == \
        [x for x in first.splitlines() if x.startswith("QUANTSHIFT_CONSOLE_SECRET=")]
    users = auth.users_from_env(dict(x.split("=", 1) for x in lines))
    assert auth.check_password("pw", users["alice"])
    with pytest.raises(UsageError, match="user name"):
        passwd(env, "a b", generate=True, if_missing=False)


# --- sessions decided on the server (issue 30, finding 3) ------------------------------

class Clock:
    """The sessions' wall clock, moved by the test instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def minutes(self, n: float) -> None:
        self.now += n * 60


def replay(client: TestClient, cookie: str) -> TestClient:
    """Another client (an attacker's) holding only a copy of the cookie."""
    other = TestClient(client.app, base_url="http://127.0.0.1")
    other.cookies.set("quantshift_console", cookie)
    return other


def refused(client: TestClient, token: str, runner: Recorder) -> None:
    """The login page on GET, 403 on POST, and no playbook started."""
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/versions", follow_redirects=False).status_code == 303
    assert client.post("/fleet/refresh", data={"csrf": token}).status_code == 403
    assert client.post("/train", data={"csrf": token}).status_code == 403
    assert runner.calls == []


def test_logout_ends_the_session_for_every_copy_of_the_cookie(
        client: TestClient, runner: Recorder, config: ConsoleConfig) -> None:
    token = login(client)
    copy = client.cookies["quantshift_console"]
    assert replay(client, copy).get("/", follow_redirects=False).status_code == 200
    assert client.post("/logout", data={"csrf": token}).url.path == "/login"
    assert client.cookies["quantshift_console"] != copy
    refused(replay(client, copy), token, runner)
    refused(client, token, runner)
    assert [x["action"] for x in audit_lines(config)][-2:] == ["login", "logout"]


def _env_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ConsoleConfig:
    from quantshift_ml.console.config import load

    env = tmp_path / "console.env"
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(PASSWORD + "\n"))
    passwd(env, "alice", generate=False, if_missing=False)
    return load(REPO, REPO / "inventory" / "local", env, state=tmp_path / "state",
                artifacts=tmp_path / "artifacts")


def test_a_password_change_ends_the_users_sessions_in_the_running_console(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: Recorder) -> None:
    config = _env_config(tmp_path, monkeypatch)
    client = TestClient(create_app(config, runner), base_url="http://127.0.0.1")
    token = login(client)
    copy = client.cookies["quantshift_console"]
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("a new password\n"))
    passwd(tmp_path / "console.env", "alice", generate=False, if_missing=False)  # as the CLI does
    refused(replay(client, copy), token, runner)
    refused(client, token, runner)
    fresh = TestClient(client.app, base_url="http://127.0.0.1")
    r = fresh.post("/login", data={"csrf": csrf(fresh), "user": "alice", "password": PASSWORD})
    assert r.status_code == 401  # the old password is gone too
    r = fresh.post("/login", data={"csrf": csrf(fresh), "user": "alice",
                                   "password": "a new password"})
    assert r.status_code == 200 and r.url.path == "/"
    ended = [x for x in audit_lines(config) if x["action"] == "session"]
    assert [(x["user"], x["reason"]) for x in ended] == [("alice", "password changed")]


def test_an_idle_session_ends_and_a_live_one_slides(config: ConsoleConfig,
                                                    runner: Recorder) -> None:
    clock = Clock()
    client = TestClient(create_app(config, runner, clock=clock), base_url="http://127.0.0.1")
    token = login(client)
    copy = client.cookies["quantshift_console"]
    for _ in range(3):  # 87 minutes in all, never 30 without a request: still logged in
        clock.minutes(29)
        assert client.get("/", follow_redirects=False).status_code == 200
    clock.minutes(30)
    refused(client, token, runner)
    refused(replay(client, copy), token, runner)
    ended = [x for x in audit_lines(config) if x["action"] == "session"]
    assert [(x["user"], x["reason"]) for x in ended] == [("alice", "idle timeout")]
    assert list(config.sessions.iterdir()) == []  # the record is gone


def test_the_idle_timeout_is_configurable_and_the_absolute_one_holds(
        tmp_path: Path, runner: Recorder) -> None:
    from dataclasses import replace

    base = ConsoleConfig(project=REPO, inventory=REPO / "inventory" / "local",
                         artifacts=tmp_path / "artifacts", walkforward=REPO / "docs",
                         state=tmp_path / "state", users={"alice": auth.hash_password(PASSWORD)},
                         secret="s", idle_minutes=5)
    clock = Clock()
    client = TestClient(create_app(base, runner, clock=clock), base_url="http://127.0.0.1")
    token = login(client)
    clock.minutes(6)
    refused(client, token, runner)
    long_idle = replace(base, idle_minutes=60)
    client = TestClient(create_app(long_idle, runner, clock=clock), base_url="http://127.0.0.1")
    token = login(client)
    for _ in range(9):  # active every 50 minutes: 7.5 h still fine
        clock.minutes(50)
        assert client.get("/", follow_redirects=False).status_code == 200
    clock.minutes(30)  # 8 h after the login, however active
    refused(client, token, runner)
    reasons = [x["reason"] for x in audit_lines(base) if x["action"] == "session"]
    assert reasons == ["idle timeout", "absolute timeout"]


def test_session_records_are_private_and_hold_no_cookie(client: TestClient,
                                                        config: ConsoleConfig) -> None:
    login(client)
    cookie = client.cookies["quantshift_console"]
    (record,) = list(config.sessions.iterdir())
    assert stat.S_IMODE(config.sessions.stat().st_mode) == 0o700
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert cookie not in record.name and cookie not in record.read_text()
    assert config.users["alice"] not in record.read_text()
    body = json.loads(record.read_text())
    assert set(body) == {"user", "csrf", "created", "password_digest"}


def test_a_symlinked_sessions_directory_is_refused(config: ConsoleConfig,
                                                   tmp_path: Path) -> None:
    from quantshift_ml.console.sessions import SessionStore

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config.state.mkdir()
    config.sessions.symlink_to(elsewhere)
    store = SessionStore(config.sessions, idle=60, absolute=3600)
    with pytest.raises(UsageError, match="will not write through it"):
        store.create("alice", config.users["alice"], csrf="t")
    assert list(elsewhere.iterdir()) == []


def test_a_request_racing_a_logout_does_not_bring_the_session_back(
        config: ConsoleConfig) -> None:
    from quantshift_ml.console import sessions

    store = sessions.SessionStore(config.sessions, idle=60, absolute=3600)
    live = store.create("alice", config.users["alice"], csrf="t")
    path = store._path(live.sid)
    assert store.delete(live.sid) and not path.exists()
    sessions._touch(path, time.time())  # the slide of a request that read it just before
    assert not path.exists() and store.lookup(live.sid, config.users) is None


def test_revoke_ends_every_session_or_one_users(config: ConsoleConfig, runner: Recorder) -> None:
    from dataclasses import replace

    from quantshift_ml.console.cli import revoke

    two = replace(config, users={**config.users, "bob": auth.hash_password("bob pw")})
    app = create_app(two, runner)
    alice, bob = (TestClient(app, base_url="http://127.0.0.1") for _ in range(2))
    token = login(alice)
    r = bob.post("/login", data={"csrf": csrf(bob), "user": "bob", "password": "bob pw"})
    assert r.url.path == "/"
    assert revoke(two.state, "bob") == {"state": str(two.state), "user": "bob", "revoked": 1}
    assert bob.get("/", follow_redirects=False).status_code == 303
    assert alice.get("/", follow_redirects=False).status_code == 200
    assert revoke(two.state, None)["revoked"] == 1
    refused(alice, token, runner)
    nowhere = two.state.parent / "never-started"
    assert revoke(nowhere, None)["revoked"] == 0 and not nowhere.exists()  # creates nothing


def test_idle_minutes_from_the_flag_the_environment_or_the_default() -> None:
    from quantshift_ml.console.config import IDLE_ENV, idle_minutes

    assert idle_minutes(None, {}) == 30.0
    assert idle_minutes(None, {IDLE_ENV: "12"}) == 12.0
    assert idle_minutes(5, {IDLE_ENV: "12"}) == 5.0
    for bad in ("0", "-3", "soon", "481"):
        with pytest.raises(UsageError, match="idle timeout"):
            idle_minutes(None, {IDLE_ENV: bad})


def test_a_broken_env_file_leaves_nobody_logged_in(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   runner: Recorder) -> None:
    config = _env_config(tmp_path, monkeypatch)
    client = TestClient(create_app(config, runner), base_url="http://127.0.0.1")
    login(client)
    env = tmp_path / "console.env"
    env.write_text(env.read_text() + "QUANTSHIFT_CONSOLE_USER_bob=hunter2\n")
    assert client.get("/", follow_redirects=False).status_code == 303
    assert len(config.users) == 0


def test_workers_share_the_sessions(config: ConsoleConfig, runner: Recorder) -> None:
    """Two apps over one state directory, as two uvicorn workers would be."""
    one = TestClient(create_app(config, runner), base_url="http://127.0.0.1")
    token = login(one)
    two = replay(TestClient(create_app(config, runner)), one.cookies["quantshift_console"])
    assert two.get("/", follow_redirects=False).status_code == 200
    one.post("/logout", data={"csrf": token})
    refused(two, token, runner)
