"""The sandbox side of egress: an internal Docker network and a host firewall.

A sandbox granted egress joins one Docker network created with
``internal: true``: Docker gives it no route out and no NAT. The network has
an explicitly configured subnet, because only then does Docker accept a
fixed address per container, and the proxy ties each call's credential to
its sandbox's address. Inter-container
traffic on it is off (enable_icc=false), so concurrent sandboxes cannot
reach each other. What remains reachable is the host itself, at the
network's gateway address: every host service listening on 0.0.0.0 would be
exposed. So the host's INPUT chain gets rules for the bridge that accept
only TCP to the proxy's port and refuse everything else (REJECT, so a
stray connection or DNS query fails at once rather than hanging).

Each executor tags its accept rule with its pid; rules of executors that are
no longer running are removed at start, so a crash leaves no open port.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import Protocol

from airlock.executor._errors import EgressSetupError

log = logging.getLogger("airlock.executor.egress")

CHAIN = "AIRLOCK-EGRESS"
COMMENT_PREFIX = "airlock-executor-"


@dataclass(frozen=True)
class EgressNetwork:
    """The internal network as the proxy and the address book need it."""

    gateway: str
    """The host's address on the network: the proxy listens there."""
    subnet: str
    """The network's configured IPv4 subnet; each sandbox gets a fixed address in it."""


class NetworkBackend(Protocol):
    def ensure_internal_network(self, name: str, bridge: str, subnet: str | None) -> EgressNetwork:
        """Creates the internal network if needed (with ``subnet``, or one
        Docker picks, configured explicitly so that sandboxes can be given
        fixed addresses); returns its gateway and subnet."""
        ...


class HostFirewall:
    """INPUT rules for the egress bridge: only the proxy port is open."""

    def __init__(self, bridge: str, gateway_ip: str, port: int) -> None:
        self._bridge = bridge
        self._accept = [
            "-i", bridge, "-p", "tcp", "-d", gateway_ip, "--dport", str(port),
            "-m", "comment", "--comment", f"{COMMENT_PREFIX}{os.getpid()}", "-j", "ACCEPT",
        ]  # fmt: skip
        self._iptables = shutil.which("iptables")
        self._ip6tables = shutil.which("ip6tables")

    def install(self) -> None:
        if self._iptables is None:
            raise EgressSetupError("iptables is not installed; the egress bridge cannot be closed to host services")
        if self._run("-S", CHAIN, check=False).returncode != 0:
            self._run("-N", CHAIN)
        if self._run("-C", "INPUT", "-i", self._bridge, "-j", CHAIN, check=False).returncode != 0:
            self._run("-I", "INPUT", "1", "-i", self._bridge, "-j", CHAIN)
        # Refused, not dropped: a sandbox's stray connection or DNS query
        # fails at once instead of hanging until its timeout.
        refuse = ("-i", self._bridge, "-j", "REJECT")
        if self._run("-C", CHAIN, *refuse, check=False).returncode != 0:
            self._run("-A", CHAIN, *refuse)
        # Rules of earlier versions dropped; REJECT now ends the chain.
        self._run("-D", CHAIN, "-i", self._bridge, "-j", "DROP", check=False)
        self._remove_stale()
        self._run("-I", CHAIN, "1", *self._accept)
        # The proxy listens on IPv4 only and Docker disables IPv6 in the
        # sandboxes; should a daemon turn IPv6 on, the bridge's addresses
        # still accept nothing from sandboxes.
        if self._ip6tables is not None:
            drop6 = ("INPUT", "-i", self._bridge, "-j", "DROP")
            if self._run("-C", *drop6, check=False, binary=self._ip6tables).returncode != 0:
                self._run("-I", *drop6[:1], "1", *drop6[1:], binary=self._ip6tables)

    def remove(self) -> None:
        if self._iptables is not None:
            self._run("-D", CHAIN, *self._accept, check=False)

    def _remove_stale(self) -> None:
        listing = self._run("-S", CHAIN).stdout
        for line in listing.splitlines():
            words = shlex.split(line)
            if words[:2] != ["-A", CHAIN] or "--comment" not in words:
                continue
            tag = words[words.index("--comment") + 1]
            pid = tag.removeprefix(COMMENT_PREFIX)
            if tag.startswith(COMMENT_PREFIX) and pid.isdigit() and not _alive(int(pid)):
                log.warning("removing the egress firewall rule of executor pid %s, which is gone", pid)
                self._run("-D", *words[1:], check=False)

    def _run(self, *args: str, check: bool = True, binary: str | None = None) -> subprocess.CompletedProcess[str]:
        binary = binary or self._iptables
        assert binary is not None
        done = subprocess.run(  # noqa: S603 - fixed binary, arguments built here
            [binary, "-w", *args], capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise EgressSetupError(f"iptables {' '.join(args)}: {done.stderr.strip()}")
        return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
