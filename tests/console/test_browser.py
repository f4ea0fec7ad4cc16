"""The console end to end in headless Chromium, on a temporary copy of inventory/local.

Steps run in file order and share ``seen``: log in (a wrong password first), see
both hosts, Train Now with progress to completion, both hosts on the new version
(checked against the stores from the shell), the new point on the chart, the
comparison with the previous version, a refusal while another operation holds
the lease, the monitor, rollback, both hosts back; then a copy of the session
cookie replayed after logout and after a password change (refused both times).
Each page is photographed (``make console-screenshots`` writes the pictures
docs/console.md shows).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from quantshift_ml.store import lease
from tests.console.conftest import BIN, PASSWORD, LocalFleet

seen: dict[str, Any] = {}
OPERATION_TIMEOUT = 900


def by(kind: str) -> Any:
    from selenium.webdriver.common.by import By

    return getattr(By, kind)


def shot(driver: Any, shots: Path, name: str) -> None:
    """A screenshot of the whole page (the window is grown to the page's height)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 40, 700), 4000))
    driver.save_screenshot(str(shots / f"{name}.png"))
    driver.set_window_size(1280, 900)


def hosts_on_page(driver: Any) -> dict[str, str]:
    rows = driver.find_elements(by("CSS_SELECTOR"), "#fleet tbody tr[data-host]")
    return {r.get_attribute("data-host"): r.find_element(by("CLASS_NAME"), "version").text
            for r in rows}


def press(driver: Any, button_id: str, confirm: bool = False) -> None:
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(by("ID"), button_id).click()
    if confirm:
        WebDriverWait(driver, 10).until(ec.alert_is_present())
        driver.switch_to.alert.accept()


def shown(driver: Any, element_id: str) -> bool:
    """Waits for the element: a form's answer may load after the click returns."""
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return bool(WebDriverWait(driver, 20).until(
        ec.visibility_of_element_located((by("ID"), element_id))))


def logged_in(driver: Any) -> bool:
    return shown(driver, "nav-fleet")


def follow_job(driver: Any) -> dict[str, Any]:
    """Watch the job page until the run and the fleet refresh are done; what was seen."""
    deadline, progress_while_running = time.time() + OPERATION_TIMEOUT, 0
    while time.time() < deadline:
        try:  # one read of the page; it may be replaced under us by the final reload
            status = driver.find_element(by("ID"), "job-status")
            done, text = status.get_attribute("data-done") == "true", status.text
            rows = len(driver.find_elements(by("CSS_SELECTOR"), "#progress tbody tr"))
        except Exception:
            time.sleep(0.3)
            continue
        if done:
            return {"status": text, "rows": rows,
                    "progress_while_running": progress_while_running}
        if text == "running":
            progress_while_running = max(progress_while_running, rows)
        time.sleep(0.3)
    raise AssertionError("the operation did not finish in time")


def hosts_after(driver: Any) -> dict[str, str]:
    rows = driver.find_elements(by("CSS_SELECTOR"), "#hosts-after tr[data-host]")
    return {r.get_attribute("data-host"): r.find_element(by("CLASS_NAME"), "version").text
            for r in rows}


def test_login_refuses_a_wrong_password(driver: Any, console: str, shots: Path) -> None:
    driver.get(console)
    assert driver.current_url.endswith("/login")
    driver.find_element(by("ID"), "user").send_keys("admin")
    driver.find_element(by("ID"), "password").send_keys("not-the-password")
    press(driver, "login")
    assert "wrong user name or password" in driver.find_element(by("ID"), "login-error").text
    shot(driver, shots, "login")
    driver.find_element(by("ID"), "user").send_keys("admin")
    driver.find_element(by("ID"), "password").send_keys(PASSWORD)
    press(driver, "login")
    assert logged_in(driver)


def test_fleet_shows_both_hosts(driver: Any, console: str, fleet: LocalFleet,
                                shots: Path) -> None:
    driver.get(console)
    press(driver, "refresh")
    assert follow_job(driver)["status"] == "successful"
    driver.get(console)
    on_page = hosts_on_page(driver)
    truth = {h: fleet.status(h)["active"]["version"] for h in ("primary", "standby")}
    assert on_page == truth and len(set(truth.values())) == 1
    seen["before"] = truth["primary"]
    seen["before_sha"] = fleet.file_sha("primary")
    shot(driver, shots, "fleet")


def test_train_now_rolls_out_a_new_version(driver: Any, console: str, fleet: LocalFleet,
                                           shots: Path) -> None:
    driver.get(console + "operations")
    press(driver, "train-now", confirm=True)
    result = follow_job(driver)
    assert result["status"] == "successful", driver.page_source[-3000:]
    assert result["progress_while_running"] > 0  # tasks appeared while it ran
    assert "gate PASSED" in driver.find_element(by("ID"), "gate").text
    after = hosts_after(driver)
    new = after["primary"]
    assert new != seen["before"] and after == {"primary": new, "standby": new}
    for host in ("primary", "standby"):  # exactly what the shell sees on the hosts
        status = fleet.status(host)
        assert status["active"]["version"] == new
        assert status["active"]["sha256"] == status["active"]["file_sha256"] == \
            fleet.file_sha(host)
        assert seen["before"] in [b["version"] for b in status["backups"]]
    seen["new"] = new
    shot(driver, shots, "train-now")


def test_versions_chart_has_the_new_point(driver: Any, console: str, shots: Path) -> None:
    driver.get(console + "versions")
    points = driver.find_elements(
        by("CSS_SELECTOR"), f'#metric-chart circle[data-x="{seen["new"]}"]')
    assert {p.get_attribute("data-series") for p in points} >= {"test accuracy",
                                                                "balanced accuracy"}
    shot(driver, shots, "versions")
    press(driver, "compare")
    assert shown(driver, "cmp-a")  # the comparison is a new page: wait for it to load
    assert driver.find_element(by("ID"), "cmp-a").text == seen["before"]
    assert driver.find_element(by("ID"), "cmp-b").text == seen["new"]
    assert "Confusion matrix" in driver.page_source
    shot(driver, shots, "compare")


def test_train_now_is_refused_while_another_operation_holds_the_lease(
        driver: Any, console: str, fleet: LocalFleet) -> None:
    lease.acquire(fleet.lease(), "retrain-elsewhere", ttl=600,
                  details={"controller_host": "another-controller"})
    try:
        driver.get(console + "operations")
        press(driver, "train-now", confirm=True)
        assert follow_job(driver)["status"] == "failed"
        failures = driver.find_element(by("ID"), "failures").text
        assert "another operation holds the lease" in failures
    finally:
        lease.release(fleet.lease(), "retrain-elsewhere")
    assert {h: fleet.status(h)["active"]["version"] for h in ("primary", "standby")} == \
        {"primary": seen["new"], "standby": seen["new"]}


def test_monitor_walkforward_pages(driver: Any, console: str, shots: Path) -> None:
    driver.get(console)
    press(driver, "run-monitor")
    assert follow_job(driver)["status"] in ("successful", "failed")  # CRITICAL exits 2
    driver.get(console + "monitoring")
    panels = driver.find_elements(by("CSS_SELECTOR"), "section.host-panel")
    assert {p.get_attribute("data-host") for p in panels} == {"primary", "standby"}
    assert driver.find_elements(by("CSS_SELECTOR"), "#live-chart circle")
    for panel in panels:  # the served answers judged on what the market did (issue 26)
        checks = [td.text for td in panel.find_elements(by("CSS_SELECTOR"),
                                                        "table.checks td:first-child")]
        assert "live_outcomes" in checks, checks
    shot(driver, shots, "monitoring")
    driver.get(console + "walkforward")
    assert driver.find_elements(by("CSS_SELECTOR"), '#wf-by-year circle[data-series="model"]')
    rows = {tr.find_elements(by("TAG_NAME"), "td")[0].text:
            [td.text for td in tr.find_elements(by("TAG_NAME"), "td")]
            for tr in driver.find_elements(by("CSS_SELECTOR"), "#wf-outcomes tbody tr")}
    assert {"model", "hmm_range_tuned"} <= set(rows), rows
    assert float(rows["model"][3]) > -5  # economic Sharpe, a number
    paired = driver.find_element(by("ID"), "wf-outcomes-paired").text
    assert "economic" in paired and "forward_vol" in paired
    assert "champion" in rows  # the champion row (issue 25) beside the fixed families
    assert "switch" in driver.find_element(by("ID"), "wf-champion").text
    versus = driver.find_element(by("ID"), "wf-champion-vs").text
    assert all(f in versus for f in ("forest", "hmm_filter", "hmm_range_filter"))
    shot(driver, shots, "walkforward")


def test_rollback_puts_both_hosts_back(driver: Any, console: str, fleet: LocalFleet,
                                       shots: Path) -> None:
    driver.get(console + "operations")
    press(driver, "rollback", confirm=True)
    assert follow_job(driver)["status"] == "successful", driver.page_source[-3000:]
    assert hosts_after(driver) == {"primary": seen["before"], "standby": seen["before"]}
    shot(driver, shots, "rollback")
    for host in ("primary", "standby"):
        assert fleet.status(host)["active"]["version"] == seen["before"]
    assert fleet.file_sha("primary") == seen["before_sha"]
    driver.get(console + "audit")
    text = driver.find_element(by("ID"), "audit").text
    for action in ("retrain", "rollback", "login"):
        assert re.search(rf"admin {action} (successful|ok)", text), text
    shot(driver, shots, "audit")


def test_requests_without_a_session_or_token_change_nothing(driver: Any, console: str,
                                                            fleet: LocalFleet) -> None:
    before = {h: fleet.file_sha(h) for h in ("primary", "standby")}
    cookie = driver.get_cookie("quantshift_console")  # the browser's logged-in session
    assert cookie is not None
    for path in ("train", "rollback"):
        for headers in ({}, {"Cookie": f"quantshift_console={cookie['value']}"}):
            data = urllib.parse.urlencode({"csrf": "forged", "to": "latest"}).encode()
            req = urllib.request.Request(console + path, data=data, headers=headers)
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10)
            assert err.value.code == 403
    time.sleep(2)
    assert {h: fleet.file_sha(h) for h in ("primary", "standby")} == before
    audit = (fleet.base / "state" / "audit.log").read_text().splitlines()
    assert all(json.loads(x)["result"] != "started" or json.loads(x)["user"] == "admin"
               for x in audit)


def _replay(console: str, path: str, cookie: str, form: dict[str, str] | None = None
            ) -> tuple[int, str]:
    """A request carrying only a copy of the cookie (no redirect followed): status, Location."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(console + path, data=data,
                                 headers={"Cookie": f"quantshift_console={cookie}"})
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Location", "")
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Location", "")


def _log_in(driver: Any, console: str, password: str) -> None:
    driver.get(console + "login")
    driver.find_element(by("ID"), "user").send_keys("admin")
    driver.find_element(by("ID"), "password").send_keys(password)
    press(driver, "login")


def test_logout_ends_the_session_for_a_copied_cookie(driver: Any, console: str,
                                                      fleet: LocalFleet) -> None:
    driver.get(console)
    assert logged_in(driver)
    copy = driver.get_cookie("quantshift_console")
    token = driver.find_element(by("CSS_SELECTOR"), "#refresh").find_element(
        by("XPATH"), "./ancestor::form//input[@name='csrf']").get_attribute("value")
    assert _replay(console, "", copy["value"])[0] == 200  # the copy works while logged in
    press(driver, "logout")
    assert shown(driver, "password") and driver.current_url.endswith("/login")
    # the copy, put back into the browser: the login page, not the fleet
    driver.delete_cookie("quantshift_console")
    driver.add_cookie({k: copy[k] for k in ("name", "value", "path", "httpOnly") if k in copy})
    driver.get(console)
    assert driver.current_url.endswith("/login") and driver.find_elements(by("ID"), "password")
    assert not driver.find_elements(by("ID"), "nav-fleet")
    # and from outside the browser: GET sent to /login, the POST refused before any handler
    assert _replay(console, "", copy["value"]) == (303, "/login")
    jobs_before = (fleet.base / "state" / "audit.log").read_text().splitlines()
    assert _replay(console, "fleet/refresh", copy["value"], {"csrf": token})[0] == 403
    assert _replay(console, "train", copy["value"], {"csrf": token})[0] == 403
    assert (fleet.base / "state" / "audit.log").read_text().splitlines() == jobs_before


def test_a_password_change_ends_the_running_consoles_sessions(driver: Any, console: str,
                                                               fleet: LocalFleet) -> None:
    _log_in(driver, console, PASSWORD)
    assert logged_in(driver)
    copy = driver.get_cookie("quantshift_console")["value"]
    subprocess.run([str(BIN / "quantshift-ml"), "console", "passwd", "--env-file",
                    str(fleet.base / "console.env"), "--user", "admin"],
                   input="a changed password\n", text=True, check=True, capture_output=True)
    driver.get(console)  # the same console process, not restarted
    assert driver.current_url.endswith("/login")
    assert _replay(console, "", copy) == (303, "/login")
    _log_in(driver, console, "a changed password")
    assert logged_in(driver)
    sessions = fleet.base / "state" / "sessions"
    assert [oct(p.stat().st_mode & 0o777) for p in sessions.iterdir()] == ["0o600"]
