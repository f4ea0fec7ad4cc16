"""Where debootstrap fetches from: the Debian mirror and proxy apt already uses.

Why: the controller may only reach a local mirror or proxy; reusing apt's own
configuration (``/etc/apt/sources.list*``, ``Acquire::http(s)::Proxy``) means
debootstrap goes wherever apt already goes. ``QS_TESTBED_MIRROR`` overrides.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path

from .common import log, run

DEFAULT_MIRROR = "http://deb.debian.org/debian"


def _apt_source_files() -> list[Path]:
    """The files apt itself reads: sources.list plus *.list / *.sources."""
    files = [Path("/etc/apt/sources.list")]
    parts = Path("/etc/apt/sources.list.d")
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    return [f for f in files if f.is_file()]


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    """Parse deb822 (.sources) stanzas; continuation lines are joined."""
    stanza: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanza:
                yield stanza
            stanza, key = {}, ""
            continue
        if raw[0] in " \t" and key:
            stanza[key] += " " + raw.strip()
            continue
        if ":" in raw:
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            stanza[key] = value.strip()


def _existing(keyring: str | None) -> str | None:
    """The keyring path if the file exists (debootstrap fails on a missing one)."""
    return keyring if keyring and Path(keyring).is_file() else None


def _from_deb822(text: str, suite: str) -> tuple[str, str | None] | None:
    """(URI, keyring) of the first enabled ``deb`` stanza for suite/main."""
    for st in _deb822_stanzas(text):
        if st.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in st.get("types", "").split():
            continue
        if suite not in st.get("suites", "").split():
            continue
        if "main" not in st.get("components", "").split():
            continue
        for uri in st.get("uris", "").split():
            if uri.startswith(("http://", "https://", "file:/")):
                return uri.rstrip("/"), _existing(st.get("signed-by"))
    return None


def _one_line_source(line: str, suite: str) -> tuple[str, str | None] | None:
    """(URI, keyring) if a one-line ``deb [opts] URI SUITE COMPONENTS`` matches."""
    fields = line.split("#", 1)[0].split()
    if len(fields) < 4 or fields[0] != "deb":
        return None
    keyring = None
    if fields[1].startswith("["):
        opts: list[str] = []
        while fields and not fields[0].endswith("]"):
            opts.append(fields.pop(0))
        if fields:
            opts.append(fields.pop(0))
        fields.insert(0, "deb")
        for opt in " ".join(opts).strip("[] ").split():
            if opt.startswith("signed-by="):
                keyring = opt.split("=", 1)[1]
    if len(fields) >= 4 and fields[2] == suite and "main" in fields[3:]:
        return fields[1].rstrip("/"), _existing(keyring)
    return None


def find_debian_mirror(suite: str) -> tuple[str, str | None]:
    """Return (mirror URI, keyring or None) apt on this machine uses for ``suite``."""
    override = os.environ.get("QS_TESTBED_MIRROR")
    if override:
        return override, None
    for path in _apt_source_files():
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            found = _from_deb822(text, suite)
        else:
            found = next(
                (f for ln in text.splitlines() if (f := _one_line_source(ln, suite))), None
            )
        if found:
            return found
    log(f"no apt source for {suite} found; falling back to {DEFAULT_MIRROR}")
    return DEFAULT_MIRROR, None


def apt_proxy_env() -> dict[str, str]:
    """Carry apt's configured HTTP(S) proxy over to debootstrap (it uses wget)."""
    env = dict(os.environ)
    for scheme in ("http", "https"):
        var = f"{scheme}_proxy"
        if env.get(var):
            continue
        proc = run(["apt-config", "shell", "P", f"Acquire::{scheme}::Proxy"], check=False)
        parts = shlex.split(proc.stdout.strip())
        if parts and parts[0].startswith("P="):
            value = parts[0][2:]
            if value and value.upper() != "DIRECT":
                env[var] = value
    return env
