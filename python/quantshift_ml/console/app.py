"""The console's web application (Starlette + Jinja2, served by uvicorn).

Pages read what the playbooks reported (``snapshot``), the controller's artifacts
(``versions``) and the walk-forward reports; actions start playbooks through
``jobs``. Nothing here talks to a host.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from quantshift_ml import __version__
from quantshift_ml.console import audit, pages, security
from quantshift_ml.console.auth import Throttle, check_password, new_token
from quantshift_ml.console.config import ConsoleConfig
from quantshift_ml.console.jobs import (
    Job,
    JobManager,
    Runner,
    ansible_runner_run,
    retrain_vars,
    rollback_vars,
)
from quantshift_ml.console.sessions import Clock, SessionStore, new_id
from quantshift_ml.console.snapshot import Snapshot
from quantshift_ml.errors import UsageError

HERE = Path(__file__).parent


class Console:
    """State shared by the handlers: config, sessions, jobs, snapshot, templates, throttle."""

    def __init__(self, config: ConsoleConfig, runner: Runner, clock: Clock = time.time) -> None:
        self.config = config
        self.sessions = SessionStore(config.sessions, idle=config.idle_minutes * 60,
                                     absolute=config.session_hours * 3600, clock=clock,
                                     on_end=self._session_ended)
        self.snapshot = Snapshot(config.state)
        self.jobs = JobManager(config, runner, self._finished)
        self.runner = runner
        self.throttle = Throttle()
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(version=__version__)

    def render(self, request: Request, name: str, status_code: int = 200,
               **context: Any) -> Response:
        context.update(user=security.user(request), csrf=security.csrf_token(request),
                       running=self.jobs.current)
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def _session_ended(self, user: str, reason: str) -> None:
        audit.record(self.config.audit_log, user, "session", "ended", reason=reason)

    def _finished(self, job: Job) -> None:
        """Save what the playbook reported; after an action, refresh the fleet from the hosts."""
        if job.kind == "status":
            self.snapshot.save_status(job.finished or "", job.facts)
        elif job.kind == "monitor":
            self.snapshot.save_monitor(job.finished or "", job.facts)
        else:
            audit.record(self.config.audit_log, job.user, job.kind, job.status, job=job.id,
                         rc=job.rc, check=job.check, extravars=job.extravars,
                         version=(job.train or {}).get("version"))
            job.phase = "refreshing the fleet (status.yml)"
            refresh = Job(kind="status", user=job.user, extravars={})
            refresh.rc = self.runner(refresh, self.config)
            self.snapshot.save_status(audit.now(), refresh.facts)
            job.hosts_after = pages.host_versions(self.snapshot.fleet())
        job.phase = "done"

    def start(self, request: Request, kind: str, extravars: dict[str, Any],
              check: bool = False) -> Response:
        name = security.user(request) or "?"

        def started(job: Job) -> None:
            if kind in ("retrain", "rollback"):
                audit.record(self.config.audit_log, name, kind, "started", job=job.id,
                             extravars=extravars, check=check)
        try:
            job = self.jobs.start(kind, name, extravars, check, on_start=started)
        except UsageError as exc:
            audit.record(self.config.audit_log, name, kind, "refused", reason=str(exc),
                         extravars=extravars, check=check)
            return self.render(request, "error.html", status_code=409, message=str(exc))
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)


def _form(request: Request) -> dict[str, str]:
    form = getattr(request.state, "form", None)
    return form if isinstance(form, dict) else {}


class Pages(Console):
    """The pages: each reads the snapshot, the artifacts or the reports, never a host."""

    async def login_page(self, request: Request) -> Response:
        return self.render(request, "login.html")

    async def fleet(self, request: Request) -> Response:
        return self.render(request, "fleet.html", **pages.fleet(self.config, self.snapshot))

    async def versions(self, request: Request) -> Response:
        return self.render(request, "versions.html",
                           **pages.versions(self.config, self.snapshot))

    async def compare(self, request: Request) -> Response:
        q = request.query_params
        try:
            ctx = pages.comparison(self.config, self.snapshot, q.get("a", ""), q.get("b", ""))
        except UsageError as exc:
            return self.render(request, "error.html", status_code=404, message=str(exc))
        return self.render(request, "compare.html", **ctx)

    async def operations(self, request: Request) -> Response:
        return self.render(request, "operations.html", jobs=[j.as_dict() for j in
                                                             self.jobs.recent()],
                           **pages.versions(self.config, self.snapshot))

    async def job_page(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["job"])
        if job is None:
            return self.render(request, "error.html", status_code=404,
                               message="no such operation (the console keeps the last 20)")
        return self.render(request, "job.html", job=job.as_dict())

    async def job_json(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["job"])
        if job is None:
            return JSONResponse({"error": "no such operation"}, status_code=404)
        return JSONResponse(job.as_dict())

    async def walkforward(self, request: Request) -> Response:
        try:
            ctx = pages.walkforward(self.config, request.query_params.get("report"))
        except UsageError as exc:
            return self.render(request, "error.html", status_code=404, message=str(exc))
        return self.render(request, "walkforward.html", **ctx)

    async def monitoring(self, request: Request) -> Response:
        return self.render(request, "monitoring.html",
                           **pages.monitoring(self.config, self.snapshot))

    async def audit_page(self, request: Request) -> Response:
        return self.render(request, "audit.html", lines=audit.tail(self.config.audit_log, 200))


class Actions(Pages):
    """The POST handlers; the guard has already checked the login and the CSRF token."""

    async def login(self, request: Request) -> Response:
        form, client = _form(request), request.client.host if request.client else "?"
        name = form.get("user", "")
        if self.throttle.blocked(client):
            audit.record(self.config.audit_log, name, "login", "throttled", client=client)
            return self.render(request, "login.html", status_code=429,
                               error="too many failed logins: wait five minutes")
        stored = self.config.users.get(name)
        if stored is None or not check_password(form.get("password", ""), stored):
            self.throttle.failed(client)
            audit.record(self.config.audit_log, name, "login", "failed", client=client)
            return self.render(request, "login.html", status_code=401,
                               error="wrong user name or password")
        self.throttle.succeeded(client)
        self.sessions.delete(security.cookie_value(request))  # no fixation: a new id
        self.sessions.prune(self.config.users)
        session = self.sessions.create(name, stored, csrf=new_token())
        audit.record(self.config.audit_log, name, "login", "ok", client=client)
        return self._with_cookie(RedirectResponse("/", status_code=303), session.sid)

    async def logout(self, request: Request) -> Response:
        """The record goes: every copy of this cookie is refused from now on."""
        self.sessions.delete(security.cookie_value(request))
        audit.record(self.config.audit_log, security.user(request) or "?", "logout", "ok")
        return self._with_cookie(RedirectResponse("/login", status_code=303), new_id())

    def _with_cookie(self, response: Response, value: str) -> Response:
        security.set_cookie(response, value, int(self.sessions.absolute),
                            self.config.secure_cookies)
        return response

    async def train(self, request: Request) -> Response:
        form = _form(request)
        try:
            extra = retrain_vars(form.get("check") == "on", form.get("floor", ""),
                                 form.get("as_of", ""))
        except UsageError as exc:
            return self.render(request, "error.html", status_code=400, message=str(exc))
        return self.start(request, "retrain", extra, check=form.get("check") == "on")

    async def rollback(self, request: Request) -> Response:
        form = _form(request)
        try:
            extra = rollback_vars(form.get("to", ""), form.get("force") == "on")
        except UsageError as exc:
            return self.render(request, "error.html", status_code=400, message=str(exc))
        return self.start(request, "rollback", extra, check=form.get("check") == "on")

    async def refresh(self, request: Request) -> Response:
        return self.start(request, "status", {})

    async def monitor_run(self, request: Request) -> Response:
        return self.start(request, "monitor", {})


def routes(c: Actions) -> list[Route | Mount]:
    get = [("/login", c.login_page), ("/", c.fleet), ("/versions", c.versions),
           ("/versions/compare", c.compare), ("/operations", c.operations),
           ("/jobs/{job:str}.json", c.job_json), ("/jobs/{job:str}", c.job_page),
           ("/walkforward", c.walkforward), ("/monitoring", c.monitoring),
           ("/audit", c.audit_page)]
    post = [("/login", c.login), ("/logout", c.logout), ("/train", c.train),
            ("/rollback", c.rollback), ("/fleet/refresh", c.refresh),
            ("/fleet/monitor", c.monitor_run)]
    return [*(Route(p, h, methods=["GET"]) for p, h in get),
            *(Route(p, h, methods=["POST"]) for p, h in post),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")]


def create_app(config: ConsoleConfig, runner: Runner = ansible_runner_run,
               clock: Clock = time.time) -> Starlette:
    """The ASGI app; ``runner`` runs playbooks (ansible-runner unless a test says), ``clock``
    times the sessions (a test's own clock instead of sleeping)."""
    config.state.mkdir(parents=True, exist_ok=True, mode=0o700)
    console = Actions(config, runner, clock)
    app = Starlette(routes=routes(console), middleware=[
        Middleware(security.Guard, store=console.sessions, users=config.users,
                   secret=config.secret, secure=config.secure_cookies)])
    app.state.console = console
    return app
