"""Testinfra checks that the Molecule hosts are real systemd machines.

Why: the roles under test manage systemd units and cron jobs, so the test
hosts must run systemd as PID 1 with sshd and cron, each with its own name.
"""

from __future__ import annotations

import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")


def test_systemd_is_pid1(host) -> None:
    """PID 1 must be systemd, not a shell or a fake init."""
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"


def test_system_running(host) -> None:
    """systemd finished booting and no unit failed."""
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), state


def test_sshd_active(host) -> None:
    """Ansible and testinfra connect over ssh."""
    assert host.service("ssh").is_running
    assert host.service("ssh").is_enabled


def test_cron_active(host) -> None:
    """The cron role schedules retrains and monitors with cron."""
    assert host.service("cron").is_running
    assert host.service("cron").is_enabled


def test_hostname_matches_inventory(host) -> None:
    """Each host has its own name: primary and standby must be told apart."""
    expected = host.backend.get_hostname()
    assert host.check_output("hostname") == expected


def test_hostnames_distinct() -> None:
    """No two hosts share a hostname (they share one lower rootfs)."""
    names = {testinfra.get_host(spec).check_output("hostname") for spec in _host_specs()}
    assert len(names) == len(testinfra_hosts)


def test_addresses_distinct_and_each_host_owns_its_own() -> None:
    """Each host has its own IPv4 address on its own interface (one netns each)."""
    owned = {}
    for spec in _host_specs():
        h = testinfra.get_host(spec)
        out = h.check_output("ip -4 -o addr show scope global")
        owned[spec] = {line.split()[3].split("/")[0] for line in out.splitlines()}
        assert owned[spec], f"{spec} has no global IPv4 address"
    addresses = [a for s in owned.values() for a in s]
    assert len(addresses) == len(set(addresses)), owned


def _host_specs() -> list[str]:
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return [f"ansible://{name}?ansible_inventory={inventory}" for name in testinfra_hosts]
