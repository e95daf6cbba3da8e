"""executor.egress.Egress bookkeeping: the proxy's connection caps derived
from the open-files limit, and the fixed sandbox addresses."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from prometheus_client import CollectorRegistry

from airlock.executor._config import EgressSettings
from airlock.executor._errors import RunRefused
from airlock.executor._metrics import ExecutorMetrics
from airlock.executor.egress import FD_HEADROOM, FDS_PER_RUN, Egress, proxy_capacity
from airlock.executor.egress.network import EgressNetwork
from airlock.executor.egress.proxy import MAX_PENDING, MAX_PENDING_PER_SOURCE


@pytest.mark.parametrize("fd_limit", [1024, 4096, 20_000, 65_536, 1_048_576])
@pytest.mark.parametrize("max_runs", [1, 16, 64])
def test_proxy_capacity_stays_below_the_descriptor_limit(fd_limit: int, max_runs: int) -> None:
    cap = proxy_capacity(fd_limit, max_runs, max_connections=64)
    # One descriptor per pending connection, two per tunnel, and the headroom
    # for everything else is never touched.
    assert cap.max_pending + 2 * cap.max_tunnels <= fd_limit - FD_HEADROOM - FDS_PER_RUN * max_runs
    # Never more tunnels than every run's whole allowance.
    assert cap.max_tunnels <= 64 * max_runs
    if fd_limit >= 20_000:
        # Enough room: every sandbox gets its full pending share at once.
        assert cap.max_pending >= MAX_PENDING_PER_SOURCE * max_runs
        assert cap.max_pending >= min(MAX_PENDING, fd_limit)


def test_a_limit_with_no_room_makes_egress_unavailable() -> None:
    egress = Egress(EgressSettings(), ExecutorMetrics(CollectorRegistry(), ("runc",)), fd_limit=300, max_runs=16)
    assert egress.unavailable is not None
    assert "open-files limit (300)" in egress.unavailable


class NoFirewall:
    def __init__(self, bridge: str, gateway_ip: str, port: int) -> None:
        del bridge, gateway_ip, port

    def install(self) -> None:
        pass

    def remove(self) -> None:
        pass


class TinyNetwork:
    """A /29: 6 host addresses, one of them the gateway (the proxy)."""

    def ensure_internal_network(self, name: str, bridge: str, subnet: str | None) -> EgressNetwork:
        del name, bridge, subnet
        return EgressNetwork(gateway="127.0.0.1", subnet="127.0.0.0/29")


def test_each_call_gets_its_own_address_until_none_is_left_and_closing_frees_it() -> None:
    async def go() -> None:
        egress = Egress(EgressSettings(), ExecutorMetrics(CollectorRegistry(), ("runc",)), firewall=NoFirewall)
        await egress.start(TinyNetwork())
        try:
            calls = [egress.open_call(f"r{i}", "t", ("a.test:443",), ()) for i in range(5)]
            addresses = {a.address for _, a in calls}
            assert len(addresses) == 5
            assert addresses == {f"127.0.0.{i}" for i in range(2, 7)}  # never .0, .1 (gateway) or .7
            assert all(str(g.source) == a.address for g, a in calls)
            with pytest.raises(RunRefused) as info:
                egress.open_call("r6", "t", ("a.test:443",), ())
            assert info.value.code == "egress_unavailable"
            await egress.close_call(calls[0][0])
            grant, attachment = egress.open_call("r7", "t", ("a.test:443",), ())
            assert attachment.address == calls[0][1].address
            # A clash elsewhere: a fresh address, the old one let go.
            await egress.close_call(calls[1][0])
            moved = egress.readdress(grant, attachment)
            assert moved.address == calls[1][1].address
            assert str(grant.source) == moved.address
            assert ipaddress.ip_address(attachment.address) not in egress._in_use
        finally:
            await egress.stop()

    asyncio.run(go())
