#!/usr/bin/env python3
"""Boot real Debian 12 test hosts with systemd-nspawn, without Docker.

The entry point Molecule, the Makefile and the self-test call by path; the
code is the package ``qs_testbed`` beside this file (see README.md there).
"""

from __future__ import annotations

import sys

from qs_testbed.cli import main

if __name__ == "__main__":
    sys.exit(main())
