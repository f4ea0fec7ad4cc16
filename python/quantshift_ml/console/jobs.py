"""Playbook runs launched from the console, through ansible-runner (what AWX itself uses).

The console adds no second path to the hosts: every action is one of the
project's playbooks with the extra vars the shell would pass. Progress is
collected from ansible-runner's events, task by task and host by host; the
facts the playbooks already set (``quantshift_status``, ``quantshift_monitor``)
and the ``quantshift_train`` result (the gate decision) are kept for the pages.
One operation runs at a time; the fleet lease in the playbooks refuses anything
started elsewhere.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quantshift_ml.console.audit import now
from quantshift_ml.console.config import ConsoleConfig
from quantshift_ml.errors import UsageError
from quantshift_ml.store.layout import VERSION_RE

PLAYBOOKS = {"retrain": "retrain.yml", "rollback": "rollback.yml",
             "status": "status.yml", "monitor": "monitor.yml"}
FACTS = ("quantshift_status", "quantshift_monitor")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HOST_EVENTS = {"runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_skipped": "skipped",
                "runner_on_unreachable": "unreachable", "runner_on_start": "running"}


class Busy(UsageError):
    """Another console operation is running: refuse, never queue behind it."""


@dataclass
class Job:
    """One playbook run and everything the pages show about it."""

    kind: str
    user: str
    extravars: dict[str, Any]
    check: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started: str = field(default_factory=now)
    finished: str | None = None
    status: str = "running"
    rc: int | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: dict[str, Any] | None = None
    failures: list[dict[str, str]] = field(default_factory=list)
    phase: str = "running the playbook"
    hosts_after: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def playbook(self) -> str:
        return PLAYBOOKS[self.kind]

    def on_event(self, event: dict[str, Any]) -> None:
        """Fold one ansible-runner event into the job (called from the runner thread)."""
        kind, data = event.get("event", ""), event.get("event_data") or {}
        if kind == "playbook_on_task_start":
            self.tasks.append({"play": data.get("play", ""), "task": data.get("task", ""),
                               "hosts": {}})
        elif kind in _HOST_EVENTS and self.tasks and data.get("host"):
            self.tasks[-1]["hosts"][data["host"]] = _host_state(kind, data)
            self._keep(kind, data)

    def _keep(self, kind: str, data: dict[str, Any]) -> None:
        res = data.get("res") or {}
        host = data["host"]
        for name, value in (res.get("ansible_facts") or {}).items():
            if name in FACTS:
                self.facts.setdefault(host, {})[name] = value
        if data.get("task_action") in ("quantshift_train", "ansible.legacy.quantshift_train"):
            self.train = {k: res.get(k) for k in ("version", "gate", "metrics", "changed")}
        if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            self.failures.append({"host": host, "task": data.get("task", ""),
                                  "msg": str(res.get("msg", ""))[:2000]})

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "user": self.user, "check": self.check,
                "extravars": self.extravars, "started": self.started, "finished": self.finished,
                "status": self.status, "rc": self.rc, "tasks": self.tasks, "train": self.train,
                "failures": self.failures, "playbook": self.playbook, "phase": self.phase,
                "hosts_after": self.hosts_after, "done": self.phase == "done"}


def _host_state(kind: str, data: dict[str, Any]) -> str:
    state = _HOST_EVENTS[kind]
    if state == "ok" and (data.get("res") or {}).get("changed"):
        return "changed"
    if state == "failed" and data.get("ignore_errors"):
        return "ignored"
    return state


def retrain_vars(check: bool, floor: str, as_of: str) -> dict[str, Any]:
    """The retrain form as the playbook's extra vars; bad input is refused by name."""
    extra: dict[str, Any] = {}
    if floor.strip():
        try:
            value = float(floor)
        except ValueError:
            raise UsageError(f"floor {floor!r} is not a number between 0 and 1") from None
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"floor {value} is not between 0 and 1")
        extra["quantshift_min_accuracy"] = value
    if as_of.strip():
        if not _DATE_RE.match(as_of.strip()):
            raise UsageError(f"as-of {as_of!r} is not a date YYYY-MM-DD")
        extra["quantshift_as_of"] = as_of.strip()
    return extra


def rollback_vars(to: str, force: bool) -> dict[str, Any]:
    """The rollback form as extra vars: ``latest`` or a version name, nothing else."""
    target = to.strip() or "latest"
    if target != "latest" and not VERSION_RE.match(target):
        raise UsageError(f"rollback target {target!r} is neither 'latest' nor a version "
                         "YYYYMMDD-HHMMSS")
    extra: dict[str, Any] = {"quantshift_rollback_to": target}
    if force:
        extra["quantshift_rollback_force"] = True
    return extra


Runner = Callable[[Job, ConsoleConfig], int]


class JobManager:
    """Runs one job at a time in a thread, then refreshes the fleet with status.yml."""

    def __init__(self, config: ConsoleConfig, runner: Runner,
                 on_finish: Callable[[Job], None], history: int = 20) -> None:
        self.config, self._runner, self._on_finish = config, runner, on_finish
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []
        self._history = history
        self.current: Job | None = None

    def start(self, kind: str, user: str, extravars: dict[str, Any], check: bool = False,
              on_start: Callable[[Job], None] | None = None) -> Job:
        """Start ``kind`` unless a job runs; ``on_start`` runs before the playbook does."""
        if kind not in PLAYBOOKS:
            raise UsageError(f"unknown operation {kind!r}")
        with self._lock:
            if self.current is not None:
                raise Busy(f"{self.current.kind} started by {self.current.user} at "
                           f"{self.current.started} is still running: wait for it to finish")
            job = Job(kind=kind, user=user, extravars=extravars, check=check)
            self.current = job
            self._remember(job)
        if on_start is not None:
            on_start(job)  # e.g. the audit line "started", always before the result's
        threading.Thread(target=self._run, args=(job,), daemon=True,
                         name=f"console-{job.id}").start()
        return job

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._order.append(job.id)
        while len(self._order) > self._history:
            self._jobs.pop(self._order.pop(0), None)

    def _run(self, job: Job) -> None:
        try:
            job.rc = self._runner(job, self.config)
            job.status = "successful" if job.rc == 0 else "failed"
        except Exception as exc:  # the job page must say why, the thread must not die silently
            job.rc, job.status = -1, "failed"
            job.failures.append({"host": "controller", "task": "start the playbook",
                                 "msg": f"{type(exc).__name__}: {exc}"})
        finally:
            job.finished = now()
            try:
                self._on_finish(job)
            finally:
                with self._lock:
                    self.current = None

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def recent(self) -> list[Job]:
        return [self._jobs[i] for i in reversed(self._order) if i in self._jobs]


def _handler(job: Job) -> Callable[[dict[str, Any]], bool]:
    def handle(event: dict[str, Any]) -> bool:
        job.on_event(event)
        return True  # keep the event in ansible-runner's artifacts too
    return handle


def ansible_runner_run(job: Job, config: ConsoleConfig) -> int:
    """Run ``job``'s playbook with ansible-runner and return ansible-playbook's exit code."""
    import ansible_runner  # the console extra; imported here so the rest stays importable

    private = config.state / "runner"
    private.mkdir(parents=True, exist_ok=True)
    result = ansible_runner.run(
        private_data_dir=str(private), project_dir=str(config.playbooks),
        playbook=job.playbook, inventory=str(config.inventory), extravars=job.extravars,
        cmdline="--check --diff" if job.check else None, envvars=config.ansible_env(),
        ident=job.id, event_handler=_handler(job), quiet=True,
        rotate_artifacts=20)
    return int(result.rc if result.rc is not None else -1)
