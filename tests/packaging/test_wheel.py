"""The built wheel, installed into a fresh venv outside the checkout, is the whole product.

Why this exists: ``make venv`` installs the package editable, so every other test
reads the source tree, where the console's templates and static files always are.
A file left out of the package data, or a tool an extra does not bring, shows only
on a real install (issue 30: ``pip install 'quantshift-ml[console]'`` gave a
console without its ``static`` directory and without ``ansible``).

So this builds the wheel as ``make package-wheel`` does (``python -m build
--wheel``, from a clean copy of ``python/`` so that a stale ``build/`` cannot add
files), installs it with the ``serve`` and ``console`` extras into a new venv
under the temp dir, and runs everything from there with the temp dir as the
working directory and a ``PATH`` without the checkout's venv: nothing of the
checkout can reach the interpreter except through the wheel. The console is
pointed at the checkout only as its ``--project`` (the playbooks it runs), which
is how it is deployed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "python"
PACKAGE = SOURCE / "quantshift_ml"
EXTRAS = "serve,console"
#: build outputs and caches that a working copy of python/ may hold
NOT_SOURCE = ("build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".mypy_cache",
              ".ruff_cache", ".pytest_cache", "tests")


@dataclass(frozen=True)
class Venv:
    """A fresh venv with the wheel installed, and the environment to run it in."""

    tmp: Path
    bin: Path
    env: dict[str, str]

    def run(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / argv[0]), *argv[1:]], cwd=self.tmp, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def start(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(self.bin / argv[0]), *argv[1:]], cwd=self.tmp, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _checked(proc: subprocess.CompletedProcess[str], what: str) -> str:
    assert proc.returncode == 0, f"{what}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _clean_env(venv_bin: Path, tmp: Path) -> dict[str, str]:
    """This environment minus anything pointing into the checkout (PATH, PYTHONPATH, ...)."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "ANSIBLE_CONFIG", "QUANTSHIFT_ROOT",
            "QUANTSHIFT_KEYS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PATH=f"{venv_bin}{os.pathsep}/usr/local/bin:/usr/bin:/bin", HOME=str(tmp / "home"),
               PYTHONWARNINGS="ignore")
    return env


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    shutil.copytree(SOURCE, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    _checked(subprocess.run([sys.executable, "-m", "build", "-q", "--wheel", "--outdir",
                             str(tmp / "dist"), str(src)], cwd=tmp, capture_output=True,
                            text=True, timeout=600, check=False), "python -m build --wheel")
    (wheel,) = (tmp / "dist").glob("quantshift_ml-*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    tmp = tmp_path_factory.mktemp("wheel").resolve()
    assert REPO not in tmp.parents, f"{tmp} must be outside the checkout"
    (tmp / "home").mkdir()
    wheel = _build_wheel(tmp)
    bindir = tmp / "venv" / "bin"
    # the base interpreter, not the checkout's venv: a new, empty environment
    base = getattr(sys, "_base_executable", sys.executable)
    _checked(subprocess.run([base, "-m", "venv", str(tmp / "venv")], cwd=tmp,
                            capture_output=True, text=True, timeout=300, check=False), "venv")
    v = Venv(tmp, bindir, _clean_env(bindir, tmp))
    _checked(v.run("pip", "install", "-q", f"{wheel}[{EXTRAS}]", timeout=900),
             f"pip install {wheel.name}[{EXTRAS}]")
    return v


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_get(proc: subprocess.Popen[str], url: str, timeout: float = 120) -> tuple[int, bytes]:
    """The first answer from ``url``; fails with the process's stderr if it died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"{url}: the process exited {proc.returncode} before answering:\n{err}")
        try:
            return _get(url)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"{url}: no answer within {timeout:.0f} s")


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started: SIGTERM, then SIGKILL, whatever the test's outcome."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _package_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_the_wheel_holds_every_file_of_the_package(venv: Venv) -> None:
    code = "import quantshift_ml; print(quantshift_ml.__file__)"
    where = _checked(venv.run("python", "-c", code), "import quantshift_ml").strip()
    installed = Path(where).parent
    assert venv.tmp in installed.parents, f"imported from {installed}, not from the venv"
    missing = sorted(_package_files(PACKAGE) - _package_files(installed))
    assert not missing, f"in the source tree but not in the wheel: {missing}"
    for name in ("ansible", "ansible-playbook"):  # the console extra brings ansible-core
        assert (venv.bin / name).is_file(), f"the console extra did not install {name}"


def test_service_from_the_wheel_serves_a_model_it_trained(
        venv: Venv, stop: list[subprocess.Popen[str]]) -> None:
    keys, root = venv.tmp / "keys", venv.tmp / "root"
    _checked(venv.run("quantshift-ml", "keys", "generate", "--keys", str(keys)), "keys generate")
    venv.env["QUANTSHIFT_KEYS"] = str(keys)
    trained = json.loads(_checked(venv.run("quantshift-ml", "train", "--source", "bundled",
                                           "--root", str(root), "--promote", "--json"), "train"))
    port = _free_port()
    stop.append(venv.start("quantshift-ml", "serve", "--root", str(root), "--source", "bundled",
                           "--host", "127.0.0.1", "--port", str(port)))
    status, body = _wait_get(stop[0], f"http://127.0.0.1:{port}/healthz")
    assert status == 200, body
    health = json.loads(body)
    assert health["sha256"] == trained["sha256"]
    # the champion is served as it was signed: a forest compiled to ONNX by the serve
    # extra, a filter from its spec
    assert health.get("family") == trained["family"], health
    assert health.get("engine") == ("onnxruntime" if trained["family"] == "forest"
                                    else "filterspec"), health
    status, body = _get(f"http://127.0.0.1:{port}/regime?symbol=SPY")
    assert status == 200, body


def test_console_from_the_wheel_starts_and_serves_its_pages(
        venv: Venv, stop: list[subprocess.Popen[str]]) -> None:
    env_file = venv.tmp / "console.env"
    _checked(venv.run("quantshift-ml", "console", "passwd", "--env-file", str(env_file),
                      "--user", "admin", "--generate"), "console passwd")
    port = _free_port()
    # no --artifacts: the console reads them from the inventory through this venv's ansible
    stop.append(venv.start("quantshift-ml", "console", "--project", str(REPO),
                           "--inventory", str(REPO / "inventory" / "local"),
                           "--env-file", str(env_file), "--state", str(venv.tmp / "state"),
                           "--port", str(port)))
    base = f"http://127.0.0.1:{port}"
    status, body = _wait_get(stop[0], base + "/login")
    assert status == 200, body
    assert b'name="password"' in body and b"/static/console.css" in body
    for name in ("console.css", "console.js"):
        status, body = _get(f"{base}/static/{name}")
        assert status == 200, f"/static/{name}: HTTP {status}"
        assert body == (PACKAGE / "console" / "static" / name).read_bytes()
