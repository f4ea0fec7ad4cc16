"""Mount points below our directories, and deleting trees that may hold some.

Why: an interrupted debootstrap or a crashed nspawn leaves /proc, /sys, /dev
or overlay mounts inside directories we own; deleting such a tree with a plain
rmtree would walk into the mounts (and into the controller's /proc).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .common import TestbedError, run


def mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below prefix in our mount namespace, deepest first."""
    found = []
    pre = str(prefix).rstrip("/")
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == pre or point.startswith(pre + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_under(prefix: Path) -> None:
    """Lazily unmount anything left below prefix (normally nothing is)."""
    for point in mounts_under(prefix):
        run(["umount", "-l", point], check=False)


def safe_rmtree(path: Path) -> None:
    """Delete a tree we created, never descending into a mount.

    Unmount first and refuse if anything is still mounted below ``path``.
    """
    if not path.exists() and not path.is_symlink():
        return
    unmount_under(path)
    left = mounts_under(path)
    if left:
        raise TestbedError(f"refusing to delete {path}: still mounted: {', '.join(left)}")
    shutil.rmtree(path)
