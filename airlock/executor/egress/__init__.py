"""Filtered egress for sandboxes whose decision grants it.

Pieces: rules.py (host normalisation, allowlist globs, address checks),
proxy.py (the CONNECT / HTTP forward proxy, per-call credentials and
limits), network.py (the internal Docker network and the host firewall).
Egress wires them together for the runner; if any piece cannot be set up,
egress is unavailable and runs that ask for it are refused (fail closed).
It also keeps the address book: every sandbox granted egress gets a fixed
address on the network, chosen before its container is created, and its
call's credential is good from that address alone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from airlock.common import parse_duration_ms, parse_size
from airlock.common.egress_http import HttpRule, SecretRef
from airlock.executor._config import DEFAULT_MAX_CONCURRENT_RUNS, EgressSettings
from airlock.executor._errors import EgressSetupError, RunRefused
from airlock.executor._metrics import EGRESS_REQUEST_OUTCOMES, ExecutorMetrics
from airlock.executor._model import EgressRecord
from airlock.executor._options import TRUST_MOUNT, EgressAttachment
from airlock.executor.egress.ca import EgressCA, LeafIssuer, upstream_context
from airlock.executor.egress.inspect import Injection
from airlock.executor.egress.network import HostFirewall, NetworkBackend
from airlock.executor.egress.proxy import (
    MAX_PENDING,
    MAX_PENDING_PER_SOURCE,
    TLS,
    CallGrant,
    EgressProxy,
    Inspection,
    ProxyLimits,
    SystemResolver,
)
from airlock.executor.egress.rules import Allowlist
from airlock.executor.egress.secret_store import ChainedSecrets, EnvSecrets, FileSecrets, SecretStore

__all__ = ["NO_HTTP", "Egress", "EgressRecord", "EgressSetupError", "EgressUse", "HttpPlan"]

log = logging.getLogger("airlock.executor.egress")
#: Every spelling tools look for: curl and most libraries read the lower-case
#: names, some the upper-case ones; ALL_PROXY covers curl's other schemes.
PROXY_ENV_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
#: File descriptors left to everything but the proxy: gRPC and its relay,
#: the Docker connection pool, the metrics server, logs, DNS threads...
FD_HEADROOM = 256
#: ... and per concurrent run: its Docker connections, its attach stream,
#: its gRPC relay (two), with room to spare.
FDS_PER_RUN = 8
#: Random picks of a free sandbox address before a linear scan.
ADDRESS_PICKS = 32
#: Where a sandbox granted egress finds the trust bundle (the system's CAs
#: plus the executor's egress CA), mounted read-only, and the variables
#: that point TLS libraries at it.
TRUST_PATH = TRUST_MOUNT
TRUST_ENV_NAMES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
#: The host's CA bundle the sandbox's trust starts from (Debian's path).
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: A secret's placeholder in the sandbox: AIRLOCK_SECRET_<NAME>.
SECRET_ENV_PREFIX = "AIRLOCK_SECRET_"  # noqa: S105 - a variable name, not a secret


@dataclass(frozen=True)
class ProxyCapacity:
    """How many connections the proxy may hold, from the descriptor limit."""

    max_pending: int
    max_tunnels: int


def proxy_capacity(fd_limit: int, max_runs: int, max_connections: int) -> ProxyCapacity:
    """Pending connections take one descriptor, tunnels two (sandbox side and
    upstream). The pending cap covers MAX_PENDING_PER_SOURCE for every run, so
    a full share per sandbox always fits; tunnels never need more than every
    run's whole connection allowance."""
    budget = fd_limit - FD_HEADROOM - FDS_PER_RUN * max_runs
    pending = min(max(MAX_PENDING, MAX_PENDING_PER_SOURCE * max_runs), budget // 4)
    tunnels = min(max_connections * max_runs, (budget - pending) // 2)
    return ProxyCapacity(max(pending, 0), max(tunnels, 0))


def fd_soft_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True)
class HttpPlan:
    """A run's inspection obligations (RunSpec egress_inspect,
    egress_http_rules, egress_secrets): allowlist entries, rules, secrets."""

    inspect: tuple[str, ...] = ()
    rules: tuple[HttpRule, ...] = ()
    secrets: tuple[SecretRef, ...] = ()


NO_HTTP = HttpPlan()


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
        *,
        fd_limit: int | None = None,
        max_runs: int = DEFAULT_MAX_CONCURRENT_RUNS,
        ca_dir: Path | None = None,
    ) -> None:
        self._settings = settings
        self._make_firewall = firewall
        self._metrics = metrics
        fds = fd_soft_limit() if fd_limit is None else fd_limit
        capacity = proxy_capacity(fds, max_runs, settings.max_connections)
        self.limits = ProxyLimits(
            max_connections=settings.max_connections,
            max_bytes_out=parse_size(settings.max_bytes_out),
            max_bytes_in=parse_size(settings.max_bytes_in),
            connect_timeout_s=parse_duration_ms(settings.connect_timeout) / 1000,
            header_timeout_s=parse_duration_ms(settings.header_timeout) / 1000,
            max_records=settings.max_records,
            max_pending=capacity.max_pending,
            max_tunnels=capacity.max_tunnels,
        )
        self._resolver = SystemResolver(settings.hosts)
        #: Inspection's parts (issue 17); None until start() set them up.
        self._ca_dir = ca_dir
        self._tls: TLS | None = None
        self._secrets: SecretStore = ChainedSecrets()
        #: The trust bundle sandboxes granted egress mount (TRUST_PATH).
        self.trust_bundle: Path | None = None
        self._proxy = EgressProxy(self.limits, self._resolver, self._observe)
        self._firewall: Firewall | None = None
        self._gateway_ip = ""
        self._subnet: ipaddress.IPv4Network | None = None
        self._in_use: set[ipaddress.IPv4Address] = set()
        self.network = settings.network
        #: Why runs granted egress are refused; None once start() succeeded.
        self.unavailable: str | None = (
            "egress is disabled in executor.yaml" if not settings.enabled else "the egress proxy has not started"
        )
        if settings.enabled and (capacity.max_pending < MAX_PENDING_PER_SOURCE or capacity.max_tunnels < 1):
            self.unavailable = f"the open-files limit ({fds}) leaves no room for egress connections"

    async def start(self, backend: NetworkBackend) -> None:
        """Network, proxy, firewall; on any failure egress stays unavailable."""
        if not self._settings.enabled or self.unavailable != "the egress proxy has not started":
            if self.unavailable and self._settings.enabled:
                log.error("%s; runs granted egress will be refused", self.unavailable)
            return
        try:
            await asyncio.to_thread(self._set_up_inspection)
            net = await asyncio.to_thread(
                backend.ensure_internal_network, self._settings.network, self._settings.bridge, self._settings.subnet
            )
            self._gateway_ip = net.gateway
            self._subnet = ipaddress.IPv4Network(net.subnet)
            # Only sandboxes on the egress network may even open a
            # connection: the host's own processes have no business here.
            port = await self._proxy.start(net.gateway, sources=self._subnet)
            self._firewall = self._make_firewall(self._settings.bridge, net.gateway, port)
            await asyncio.to_thread(self._firewall.install)
        except (EgressSetupError, OSError, RuntimeError) as exc:
            self.unavailable = f"egress setup failed: {exc}"
            log.error("%s; runs granted egress will be refused", self.unavailable)  # noqa: TRY400 - the cause is the message
            await self._proxy.stop()
            return
        self.unavailable = None
        log.info(
            "egress proxy on %s (network %s, subnet %s; at most %d pending and %d open connections)",
            self._proxy.address, self.network, self._subnet, self.limits.max_pending, self.limits.max_tunnels,
        )  # fmt: skip

    def _set_up_inspection(self) -> None:
        """The CA (made on first start), the trust bundle sandboxes mount,
        the upstream trust and the secret stores; any failure leaves egress
        unavailable (EgressSetupError)."""
        if self._ca_dir is None:
            return
        ca = EgressCA.load_or_create(self._ca_dir)
        system = SYSTEM_BUNDLE.read_bytes() if SYSTEM_BUNDLE.is_file() else b""
        bundle = self._ca_dir / "trust-bundle.pem"
        staged = bundle.with_name(".trust-bundle.pem.tmp")
        # The egress CA comes last: a desktop's keeper takes the last
        # certificate for chromium's own store (deploy/images/desktop).
        staged.write_bytes(system.rstrip(b"\n") + b"\n" + ca.cert_pem if system else ca.cert_pem)
        staged.chmod(0o644)  # public: every sandbox uid reads it
        staged.replace(bundle)
        self.trust_bundle = bundle
        anchors = tuple(Path(a) for a in self._settings.trust_anchors)
        self._tls = TLS(LeafIssuer(ca), upstream_context(anchors))
        stores: list[SecretStore] = []
        if self._settings.secrets_file:
            stores.append(FileSecrets(Path(self._settings.secrets_file)))
        if self._settings.secrets_env:
            stores.append(EnvSecrets())
        self._secrets = ChainedSecrets(*stores)
        self._proxy.set_tls(self._tls)
        log.info("egress CA sha256 %s in %s", ca.fingerprint_sha256, self._ca_dir)

    async def stop(self) -> None:
        if self._firewall is not None:
            await asyncio.to_thread(self._firewall.remove)
        await self._proxy.stop()
        self._resolver.close()

    @property
    def proxy_address(self) -> str:
        return self._proxy.address

    def open_call(
        self,
        run_id: str,
        tool: str,
        allowlist: tuple[str, ...],
        allow_cidrs: tuple[str, ...],
        *,
        address: str = "",
        http: HttpPlan = NO_HTTP,
    ) -> tuple[CallGrant, EgressAttachment]:
        """The call's grant and how its sandbox is wired to the proxy: with a
        fixed address, reserved here, that the credential is tied to. A
        session's sandbox keeps its address (``address``, from reserve())
        for its life; each of its calls gets a credential of its own, which
        close_call revokes, and the address stays the session's."""
        inspect, placeholders = self._inspections(http)
        held = ipaddress.IPv4Address(address) if address else None
        source = held or self._allocate()
        try:
            grant, url = self._proxy.open_call(run_id, tool, allowlist, allow_cidrs, source=source, inspect=inspect)
        except BaseException:
            if held is None:
                self._in_use.discard(source)
            raise
        grant.keeps_address = held is not None
        env = dict.fromkeys(PROXY_ENV_NAMES, url)
        env["NO_PROXY"] = env["no_proxy"] = ""
        if self.trust_bundle is not None:
            env.update(dict.fromkeys(TRUST_ENV_NAMES, TRUST_PATH))
        env.update(placeholders)
        return grant, EgressAttachment(
            self.network, env, self._gateway_ip, str(source), self._proxy.address, self.trust_bundle_path
        )

    @property
    def inspects(self) -> bool:
        """Whether TLS inspection, HTTP rules and secrets can be enforced."""
        return self._tls is not None

    @property
    def trust_bundle_path(self) -> str:
        return str(self.trust_bundle) if self.trust_bundle is not None else ""

    def _inspections(self, http: HttpPlan) -> tuple[tuple[Inspection, ...], dict[str, str]]:
        """The call's inspected entries with their rules and secrets (values
        from the stores, placeholders made for this call), and the
        placeholders' environment for the sandbox. A secret no store holds
        refuses the run (secret_unavailable): never a request without it."""
        if not http.inspect:
            return (), {}
        if self._tls is None:
            raise RunRefused("egress_unavailable", "this executor's egress proxy cannot inspect TLS (no CA)")
        placeholders: dict[str, bytes] = {}
        env: dict[str, str] = {}
        values: dict[str, str] = {}
        for ref in http.secrets:
            value = self._secrets.get(ref.name)
            if value is None:
                raise RunRefused("secret_unavailable", f"no secret {ref.name!r} in this executor's secret stores")
            values[ref.name] = value
            if ref.name not in placeholders:
                token = f"airlock-secret-{secrets.token_urlsafe(24)}"
                placeholders[ref.name] = token.encode()
                env[SECRET_ENV_PREFIX + ref.name.upper()] = token
        entries = []
        for entry in http.inspect:
            injections = tuple(
                Injection(
                    ref.name,
                    ref.header.lower().encode(),
                    ref.format.replace("{value}", values[ref.name]).encode(),
                    values[ref.name].encode(),
                    placeholders[ref.name],
                )
                for ref in http.secrets
                if ref.host == entry
            )
            mine = {ref.name for ref in http.secrets if ref.host == entry}
            foreign = {token: name for name, token in placeholders.items() if name not in mine}
            rules = tuple(rule for rule in http.rules if rule.host == entry)
            entries.append(Inspection(entry, Allowlist((entry,)), rules, injections, foreign))
        return tuple(entries), env

    def reserve(self, *, desktop: bool = False) -> str:
        """A fixed address for a session sandbox, until release(). A
        desktop's browser presents no credential: its calls' grants are
        found by this address (EgressProxy.add_source)."""
        address = self._allocate()
        if desktop:
            self._proxy.add_source(address)
        return str(address)

    def release(self, address: str) -> None:
        held = ipaddress.IPv4Address(address)
        self._proxy.remove_source(held)
        self._in_use.discard(held)

    def attachment(self, address: str) -> EgressAttachment:
        """How a session sandbox with this address is wired: the network,
        DNS and the proxy's address (for a desktop's browser); each call's
        proxy environment comes with its exec."""
        return EgressAttachment(
            self.network, {}, self._gateway_ip, address, self._proxy.address, self.trust_bundle_path
        )

    def readdress(self, grant: CallGrant, attachment: EgressAttachment) -> EgressAttachment:
        """A new address for a call whose address another executor on the
        same network holds (Docker refused the start); the old one is let go."""
        address = self._allocate()
        if isinstance(grant.source, ipaddress.IPv4Address):
            self._in_use.discard(grant.source)
        grant.source = address
        return attachment._replace(address=str(address))

    async def close_call(self, grant: CallGrant) -> EgressUse:
        await self._proxy.close_call(grant)
        if isinstance(grant.source, ipaddress.IPv4Address) and not grant.keeps_address:
            self._in_use.discard(grant.source)
        return EgressUse(tuple(grant.records), grant.unrecorded)

    def _allocate(self) -> ipaddress.IPv4Address:
        """A free host address of the subnet (not the gateway), at random, so
        that two executors sharing the network rarely pick the same one."""
        if self._subnet is None:
            raise RunRefused("egress_unavailable", "the egress network is not set up")
        first = int(self._subnet.network_address) + 1
        count = self._subnet.num_addresses - 2  # no network or broadcast address
        taken = {*self._in_use, ipaddress.IPv4Address(self._gateway_ip)}
        for _ in range(ADDRESS_PICKS):
            candidate = ipaddress.IPv4Address(first + secrets.randbelow(count))
            if candidate not in taken:
                break
        else:
            free = (ipaddress.IPv4Address(first + i) for i in range(count))
            candidate = next((a for a in free if a not in taken), None)  # type: ignore[assignment]
            if candidate is None:
                raise RunRefused("egress_unavailable", f"no free address left on the egress network ({self._subnet})")
        self._in_use.add(candidate)
        return candidate

    def _observe(self, tool: str | None, record: EgressRecord) -> None:
        outcome = "allowed" if record.allowed else record.reason
        self._metrics.egress_connections.labels(tool or "none", outcome).inc()
        if record.bytes_out:
            self._metrics.egress_bytes.labels("out").inc(record.bytes_out)
        if record.bytes_in:
            self._metrics.egress_bytes.labels("in").inc(record.bytes_in)
        if record.cut:
            self._metrics.egress_cuts.labels(record.cut).inc()
        for outcome, count in record.request_outcomes.items():
            label = outcome if outcome in EGRESS_REQUEST_OUTCOMES else "other"
            self._metrics.egress_requests.labels(label).inc(count)
        # Attempts no call owns (no or a revoked credential) are counted but
        # logged at debug only: a sandbox must not be able to flood the log.
        log.log(
            logging.INFO if tool else logging.DEBUG,
            "egress %s %s:%s -> %s %s%s (out %d B, in %d B, %d ms)",
            record.method, record.host, record.port, record.address or "-",
            "allowed" if record.allowed else f"denied {record.reason}",
            f" cut {record.cut}" if record.cut else "", record.bytes_out, record.bytes_in, record.duration_ms,
        )  # fmt: skip
