"""A console served on a throw-away copy of inventory/local, and a real headless Chromium.

The copy keeps the inventory's own group_vars (its stores, keys and artifacts
live beside it, under the temporary directory), so the console and the shell run
the very same playbooks on the very same fleet.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PASSWORD = "console-test-password"


@dataclass
class LocalFleet:
    """The temporary fleet: run playbooks and read the stores from the shell."""

    base: Path

    @property
    def inventory(self) -> Path:
        return self.base / "inventory" / "local"

    def env(self) -> dict[str, str]:
        return {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def play(self, playbook: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(self.inventory),
                               f"playbooks/{playbook}", *extra], cwd=REPO, env=self.env(),
                              capture_output=True, text=True, timeout=900, check=False)

    def root(self, host: str) -> Path:
        return self.base / ".local" / "hosts" / host

    def status(self, host: str) -> dict:
        """What ``quantshift-ml status`` says from the shell (the ground truth)."""
        proc = subprocess.run([str(BIN / "quantshift-ml"), "status", "--root",
                               str(self.root(host)), "--keys",
                               str(self.base / ".local" / "hosts" / f"{host}.keys"), "--json"],
                              capture_output=True, text=True, check=False)
        return json.loads(proc.stdout)

    def file_sha(self, host: str) -> str:
        pkl = self.root(host) / "models" / "regime_classifier.pkl"
        return hashlib.sha256(pkl.read_bytes()).hexdigest()

    def lease(self) -> Path:
        return self.root("primary") / "models" / ".operation.lease"


def browser_or_skip() -> None:
    if CHROMIUM.exists() and DRIVER.exists():
        return
    if os.environ.get("CI"):
        pytest.fail("CI needs Debian's chromium and chromium-driver (.ci/run installs them)")
    pytest.skip("no /usr/bin/chromium or /usr/bin/chromedriver: apt-get install chromium "
                "chromium-driver")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> LocalFleet:
    base = tmp_path_factory.mktemp("console-fleet")
    shutil.copytree(REPO / "inventory" / "local", base / "inventory" / "local")
    fl = LocalFleet(base)
    for playbook in ("site.yml", "retrain.yml"):  # `make retrain`: a first version
        proc = fl.play(playbook)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return fl


@pytest.fixture(scope="module")
def console(fleet: LocalFleet) -> Iterator[str]:
    env_file = fleet.base / "console.env"
    subprocess.run([str(BIN / "quantshift-ml"), "console", "passwd", "--env-file", str(env_file),
                    "--user", "admin"], input=PASSWORD + "\n", text=True, check=True,
                   capture_output=True)
    log = fleet.base / "console.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(BIN / "quantshift-ml"), "console", "--project", str(REPO),
                                 "--inventory", str(fleet.inventory), "--port", "0",
                                 "--env-file", str(env_file), "--state",
                                 str(fleet.base / "state")],
                                cwd=REPO, env=fleet.env(), stdout=out, stderr=subprocess.STDOUT,
                                text=True)
    url = ""
    for _ in range(300):  # the first line names the URL (the port is picked by the console)
        first = log.read_text().splitlines()[:1]
        if first or proc.poll() is not None:
            url = first[0].split()[3] if first and first[0].startswith("QuantShift") else ""
            break
        time.sleep(0.1)
    assert url.startswith("http://127.0.0.1:"), log.read_text()
    try:
        yield url
    finally:
        alive = proc.poll() is None
        proc.terminate()
        proc.wait(timeout=30)
        assert alive, "the console died during the tests:\n" + log.read_text()[-5000:]


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(str(DRIVER)), options=options)  # no Selenium Manager
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: docs/console with ``make console-screenshots``, else a temp dir."""
    target = os.environ.get("QS_CONSOLE_SCREENSHOTS")
    out = (REPO / target) if target else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out
