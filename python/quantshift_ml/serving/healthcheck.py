"""Wait until a host's regime service serves a given model.

Why a poll inside one call rather than an Ansible ``uri`` task with ``until``:
each ``uri`` attempt costs an SSH round trip and a fresh Python on the host.
When a whole batch of hosts restarts at once, those attempts compete for the
CPU with the very services that are loading the model, and the fleet waits
longer the more it polls. One module call polling over loopback here costs
next to nothing per attempt. Standard library only: this runs on every host at
every rollout and must not pull in numpy or scikit-learn.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from quantshift_ml.errors import QuantshiftError


class ServiceNotServing(QuantshiftError):
    """The service did not report the expected model before the deadline."""

    exit_code = 1


def fetch_health(url: str, *, timeout: float = 2.0) -> tuple[int | None, dict[str, Any] | str]:
    """One ``GET {url}/healthz``: the HTTP status and the decoded body.

    A 503 still carries a JSON body (why the model is not loaded), which is what
    an operator needs to read, so HTTP errors are not exceptions here. A status
    of ``None`` means no HTTP answer at all (refused, timed out); the body is
    then the reason.
    """
    target = url.rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:
            status, raw = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = int(exc.code), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"no answer from {target}: {reason}"
    try:
        body = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return status, raw.decode("utf-8", "replace")[:300]
    return status, body if isinstance(body, dict) else str(body)[:300]


def _describe(status: int | None, body: dict[str, Any] | str) -> str:
    if isinstance(body, str):
        return body if status is None else f"HTTP {status}: {body}"
    served = str(body.get("sha256") or "")
    parts = [f"HTTP {status}", f"status {body.get('status', '?')}"]
    if served:
        parts.append(f"serving {body.get('version', '?')} (sha256 {served[:12]}...)")
    if body.get("error"):
        parts.append(f"error: {body['error']}")
    return ", ".join(parts)


def wait_for_sha(url: str, sha256: str, *, timeout: float = 60.0, interval: float = 0.25,
                 request_timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll ``/healthz`` until it is healthy and reports ``sha256``; return its body.

    Raises ServiceNotServing after ``timeout`` seconds with the service's last
    answer (e.g. "cannot load the active model: IntegrityError ..."), so the
    alert and the failed play say why the host was restored, not just that it
    was.
    """
    if not sha256:
        raise ValueError("sha256 to wait for is empty")
    deadline = clock() + max(timeout, 0.0)
    attempts = 0
    while True:
        attempts += 1
        status, body = fetch_health(url, timeout=request_timeout)
        if (status == 200 and isinstance(body, dict) and body.get("status") == "ok"
                and body.get("sha256") == sha256):
            return {**body, "attempts": attempts}
        if clock() >= deadline:
            raise ServiceNotServing(
                f"the service at {url} did not report sha256 {sha256[:12]}... within "
                f"{timeout:g} s ({attempts} checks); last answer: {_describe(status, body)}")
        sleep(min(interval, max(deadline - clock(), 0.0)))
