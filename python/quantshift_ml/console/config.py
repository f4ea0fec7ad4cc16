"""Where the console finds the project, its inventory and its own state.

The console runs on the control node from a checkout of this repository: the
playbooks it launches are the checkout's, with the checkout's ``ansible.cfg``,
so a button does exactly what ``ansible-playbook playbooks/X.yml`` does there.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from quantshift_ml import defaults
from quantshift_ml.console import auth
from quantshift_ml.errors import UsageError
from quantshift_ml.monitoring.alerts import read_env_file

DEFAULT_PORT = 8790
IDLE_ENV = "QUANTSHIFT_CONSOLE_IDLE_MINUTES"
log = logging.getLogger(__name__)
#: what the ``console`` extra brings for the playbooks the console runs
CONSOLE_EXTRA = "pip install 'quantshift-ml[console]' (ansible-core and ansible-runner)"


def find_project(start: Path) -> Path:
    """The checkout holding ``playbooks/retrain.yml``: ``start`` or one of its parents."""
    for cand in (start, *start.parents):
        if (cand / "playbooks" / "retrain.yml").is_file() and (cand / "ansible.cfg").is_file():
            return cand
    raise UsageError(f"{start} is not inside a quantshift-mlops checkout (no playbooks/retrain.yml "
                     "above it): run the console from the checkout or pass --project DIR")


class EnvUsers(Mapping[str, str]):
    """``{user: hash}``: the start-up environment's users, then the env file's, kept current.

    ``console passwd`` rewrites the env file while the console runs; the file is
    stat'ed on every lookup and re-read when it changed, so a new hash takes
    effect on the next request and the sessions bound to the old one end (see
    ``sessions``) without a restart. An env file that no longer parses, or holds a
    plain password, leaves no user at all until it is fixed: fail closed, and the
    log names the problem (never a value).
    """

    def __init__(self, environ: Mapping[str, str], env_file: Path | None) -> None:
        self._environ, self._env_file = dict(environ), env_file
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._users = self._read(self._stamp)  # at start-up a bad file stops the console

    def _stat(self) -> tuple[int, int, int] | None:
        if self._env_file is None:
            return None
        try:
            st = os.stat(self._env_file)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _read(self, stamp: tuple[int, int, int] | None) -> dict[str, str]:
        env = dict(self._environ)
        if stamp is not None and self._env_file is not None:
            env.update(read_env_file(self._env_file))
        return auth.users_from_env(env)

    def current(self) -> dict[str, str]:
        """The users now: the env file re-read if it changed since the last look."""
        stamp = self._stat()
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._users = self._read(stamp)
                except (UsageError, OSError) as exc:
                    log.error("console users not reloaded, nobody can log in: %s", exc)
                    self._users = {}
                self._stamp = stamp
            return self._users

    def __getitem__(self, name: str) -> str:
        return self.current()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.current())

    def __len__(self) -> int:
        return len(self.current())


@dataclass(frozen=True)
class ConsoleConfig:
    """Everything the app needs; built once at start-up, never from a request."""

    project: Path
    inventory: Path
    artifacts: Path
    walkforward: Path
    state: Path
    users: Mapping[str, str]
    secret: str = field(repr=False)
    secure_cookies: bool = False
    idle_minutes: float = defaults.CONSOLE_IDLE_MINUTES
    session_hours: float = defaults.CONSOLE_SESSION_HOURS

    playbooks: Path = field(init=False)
    audit_log: Path = field(init=False)
    sessions: Path = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "playbooks", self.project / "playbooks")
        object.__setattr__(self, "audit_log", self.state / "audit.log")
        object.__setattr__(self, "sessions", self.state / "sessions")

    def ansible_env(self) -> dict[str, str]:
        """The environment a playbook gets: the checkout's config and this venv's tools."""
        return _ansible_env(self.project)


def find_tool(name: str) -> Path | None:
    """``name`` next to this interpreter (its venv), else on ``PATH``: where playbooks find it.

    The playbooks' environment puts this interpreter's directory first on ``PATH``
    (``_ansible_env``), so this is the executable ansible-runner will start.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def check_tools() -> Path:
    """Refuse to start without what every button needs; return the ``ansible`` to run.

    Checked at start-up because otherwise the first click fails deep inside
    ansible-runner, or the start fails with a bare "No such file" for ``ansible``.
    """
    tools = {name: find_tool(name) for name in ("ansible", "ansible-playbook")}
    missing = [name for name, path in tools.items() if path is None]
    if importlib.util.find_spec("ansible_runner") is None:
        missing.append("the ansible_runner module")
    ansible = tools["ansible"]
    if missing or ansible is None:
        raise UsageError(f"the console runs playbooks with ansible and ansible-playbook (next "
                         f"to {sys.executable} or on PATH) and the ansible_runner module; "
                         f"missing: {', '.join(missing)}: {CONSOLE_EXTRA}")
    return ansible


def fleet_artifacts(project: Path, inventory: Path) -> Path:
    """``quantshift_controller_artifacts`` as the inventory defines it, read through Ansible.

    The fleet value is defined once (group_vars) and templated by Ansible; asking
    Ansible for it is the only way to read it without copying its definition.
    """
    env = {**os.environ, **_ansible_env(project)}
    cmd = [str(check_tools()), "-i", str(inventory),
           "--playbook-dir", str(project / "playbooks"),  # playbook group_vars apply too
           "quantshift_primary[0]", "-m", "ansible.builtin.debug", "-o",
           "-a", "var=quantshift_controller_artifacts"]
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    _, _, body = proc.stdout.partition("=>")
    try:
        value = json.loads(body).get("quantshift_controller_artifacts")
    except json.JSONDecodeError:
        value = None
    if proc.returncode != 0 or not isinstance(value, str) or "VARIABLE IS NOT" in value:
        raise UsageError(f"cannot read quantshift_controller_artifacts from {inventory} "
                         f"(ansible exit {proc.returncode}): pass --artifacts DIR")
    return Path(value)


def _ansible_env(project: Path) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return {"ANSIBLE_CONFIG": str(project / "ansible.cfg"),
            "PATH": bindir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
            "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "0"}


def idle_minutes(given: float | None, env: Mapping[str, str]) -> float:
    """``--idle-minutes``, else ``$QUANTSHIFT_CONSOLE_IDLE_MINUTES``, else the package's 30."""
    raw: object = given if given is not None else env.get(IDLE_ENV,
                                                          defaults.CONSOLE_IDLE_MINUTES)
    try:
        value = float(str(raw))
    except ValueError:
        value = -1.0
    if not 0 < value <= defaults.CONSOLE_SESSION_HOURS * 60:
        raise UsageError(f"idle timeout {raw!r} (--idle-minutes or {IDLE_ENV}): a number of "
                         f"minutes above 0 and at most the {defaults.CONSOLE_SESSION_HOURS:g} "
                         "hours a session lasts")
    return value


def state_dir(root: Path, state: Path | None) -> Path:
    return (state or root / ".local" / "console").resolve()


def load(project: Path | None, inventory: Path | None, env_file: Path | None,
         state: Path | None = None, artifacts: Path | None = None,
         walkforward: Path | None = None, secure_cookies: bool = False,
         idle: float | None = None) -> ConsoleConfig:
    """Resolve the paths and read the users; refuse to start without a user or Ansible."""
    check_tools()
    root = (project or find_project(Path.cwd())).resolve()
    env = dict(os.environ)
    if env_file is not None:
        if not env_file.is_file():
            raise UsageError(f"--env-file {env_file} does not exist: create it with "
                             f"`quantshift-ml console passwd --env-file {env_file}`")
        env.update(read_env_file(env_file))
    users = EnvUsers(os.environ, env_file)
    if not users:
        raise UsageError("no console user: set QUANTSHIFT_CONSOLE_USER_<name>=<hash> in the "
                         "environment or in --env-file (`quantshift-ml console passwd`)")
    inv = (inventory or root / "inventory" / "local").resolve()
    if not inv.exists():
        raise UsageError(f"inventory {inv} does not exist")
    return ConsoleConfig(
        project=root, inventory=inv,
        artifacts=(artifacts or fleet_artifacts(root, inv)).resolve(),
        walkforward=(walkforward or root / "docs" / "walkforward").resolve(),
        state=state_dir(root, state), users=users,
        # signs the login form's CSRF token: without it a login form opened before a
        # restart must be reloaded (sessions themselves are records: they survive it)
        secret=env.get(auth.SECRET_ENV) or secrets.token_urlsafe(32),
        secure_cookies=secure_cookies, idle_minutes=idle_minutes(idle, env))
