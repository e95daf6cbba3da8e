"""Filtered egress for sandboxes whose decision grants it.

Pieces: rules.py (host normalisation, allowlist globs, address checks),
proxy.py (the CONNECT / HTTP forward proxy, per-call credentials and
limits), network.py (the internal Docker network and the host firewall).
Egress wires them together for the runner; if any piece cannot be set up,
egress is unavailable and runs that ask for it are refused (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from airlock import parse_duration_ms, parse_size
from executor._config import EgressSettings
from executor._metrics import ExecutorMetrics
from executor._model import EgressRecord
from executor._options import EgressAttachment
from executor.egress.network import EgressSetupError, HostFirewall, NetworkBackend
from executor.egress.proxy import CallGrant, EgressProxy, ProxyLimits, SystemResolver

__all__ = ["Egress", "EgressRecord", "EgressSetupError", "EgressUse"]

log = logging.getLogger("airlock.executor.egress")
#: Every spelling tools look for: curl and most libraries read the lower-case
#: names, some the upper-case ones; ALL_PROXY covers curl's other schemes.
PROXY_ENV_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@dataclass(frozen=True)
class EgressUse:
    """What one run's egress produced, for its result and audit event."""

    records: tuple[EgressRecord, ...]
    unrecorded: int


class Firewall(Protocol):
    def install(self) -> None: ...
    def remove(self) -> None: ...


class Egress:
    def __init__(
        self,
        settings: EgressSettings,
        metrics: ExecutorMetrics,
        firewall: Callable[[str, str, int], Firewall] = HostFirewall,
    ) -> None:
        self._settings = settings
        self._make_firewall = firewall
        self._metrics = metrics
        limits = ProxyLimits(
            max_connections=settings.max_connections,
            max_bytes_out=parse_size(settings.max_bytes_out),
            max_bytes_in=parse_size(settings.max_bytes_in),
            connect_timeout_s=parse_duration_ms(settings.connect_timeout) / 1000,
            header_timeout_s=parse_duration_ms(settings.header_timeout) / 1000,
            max_records=settings.max_records,
        )
        self._resolver = SystemResolver(settings.hosts)
        self._proxy = EgressProxy(limits, self._resolver, self._observe)
        self._firewall: Firewall | None = None
        self._gateway_ip = ""
        self.network = settings.network
        #: Why runs granted egress are refused; None once start() succeeded.
        self.unavailable: str | None = (
            "egress is disabled in executor.yaml" if not settings.enabled else "the egress proxy has not started"
        )

    async def start(self, backend: NetworkBackend) -> None:
        """Network, proxy, firewall; on any failure egress stays unavailable."""
        if not self._settings.enabled:
            return
        try:
            gateway_ip = await asyncio.to_thread(
                backend.ensure_internal_network, self._settings.network, self._settings.bridge
            )
            self._gateway_ip = gateway_ip
            port = await self._proxy.start(gateway_ip)
            self._firewall = self._make_firewall(self._settings.bridge, gateway_ip, port)
            await asyncio.to_thread(self._firewall.install)
        except (EgressSetupError, OSError, RuntimeError) as exc:
            self.unavailable = f"egress setup failed: {exc}"
            log.error("%s; runs granted egress will be refused", self.unavailable)  # noqa: TRY400 - the cause is the message
            await self._proxy.stop()
            return
        self.unavailable = None
        log.info("egress proxy on %s (network %s)", self._proxy.address, self.network)

    async def stop(self) -> None:
        if self._firewall is not None:
            await asyncio.to_thread(self._firewall.remove)
        await self._proxy.stop()
        self._resolver.close()

    @property
    def proxy_address(self) -> str:
        return self._proxy.address

    def open_call(
        self, run_id: str, tool: str, allowlist: tuple[str, ...], allow_cidrs: tuple[str, ...]
    ) -> tuple[CallGrant, EgressAttachment]:
        """The call's grant and how its sandbox is wired to the proxy."""
        grant, url = self._proxy.open_call(run_id, tool, allowlist, allow_cidrs)
        env = dict.fromkeys(PROXY_ENV_NAMES, url)
        env["NO_PROXY"] = env["no_proxy"] = ""
        return grant, EgressAttachment(self.network, env, self._gateway_ip)

    async def close_call(self, grant: CallGrant) -> EgressUse:
        await self._proxy.close_call(grant)
        return EgressUse(tuple(grant.records), grant.unrecorded)

    def _observe(self, tool: str | None, record: EgressRecord) -> None:
        outcome = "allowed" if record.allowed else record.reason
        self._metrics.egress_connections.labels(tool or "none", outcome).inc()
        if record.bytes_out:
            self._metrics.egress_bytes.labels("out").inc(record.bytes_out)
        if record.bytes_in:
            self._metrics.egress_bytes.labels("in").inc(record.bytes_in)
        if record.cut:
            self._metrics.egress_cuts.labels(record.cut).inc()
        # Attempts no call owns (no or a revoked credential) are counted but
        # logged at debug only: a sandbox must not be able to flood the log.
        log.log(
            logging.INFO if tool else logging.DEBUG,
            "egress %s %s:%s -> %s %s%s (out %d B, in %d B, %d ms)",
            record.method, record.host, record.port, record.address or "-",
            "allowed" if record.allowed else f"denied {record.reason}",
            f" cut {record.cut}" if record.cut else "", record.bytes_out, record.bytes_in, record.duration_ms,
        )  # fmt: skip
