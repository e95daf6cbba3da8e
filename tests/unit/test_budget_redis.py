"""gateway._budget_redis against a real redis-server (tests/fixtures/redis.py):
counting, the window, release, TTLs, key encoding, the ACL, and every
failure failing closed as budget_unavailable, in the store and in the core."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml
from fixtures.redis import RedisServer
from prometheus_client import CollectorRegistry
from test_gateway_core import DECISION_PATH, GRANTED_PATH, REGISTRY, FakeAudit, FakeExecutor, FakePolicy, call_input

from airlock.gateway import load_registry
from airlock.gateway._budget import COUNTER_NAMES, CallCounters
from airlock.gateway._budget_redis import RedisCounters, RedisSettings, redis_keys
from airlock.gateway._core import CoreSettings, Gateway
from airlock.gateway._errors import BudgetError
from airlock.gateway._metrics import GatewayMetrics

PREFIX = "airlock:budget"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis") / "srv", key_prefix=PREFIX)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _clean(server: RedisServer) -> None:
    if server.proc is None:
        server.start()
    with server.admin() as admin:
        admin.flushall()


def settings(
    server: RedisServer, *, password: str | None = None, timeout_s: float = 0.2, url: str = ""
) -> RedisSettings:
    return RedisSettings(
        url=url or server.unix_url,
        username="airlock-gateway",
        password=server.password if password is None else password,
        timeout_s=timeout_s,
        key_prefix=PREFIX,
    )


class Errors(list[tuple[str, str]]):
    def __call__(self, operation: str, cause: str) -> None:
        self.append((operation, cause))


def with_store(
    server: RedisServer, body: Callable[[RedisCounters, Errors], Awaitable[None]], window: int = 60
) -> Errors:
    """Runs ``body`` with a fresh store on its own event loop (the tests are
    plain functions, like the rest of the unit tier); returns the errors it counted."""
    errors = Errors()

    async def main() -> None:
        counters = RedisCounters(settings(server), window, errors)
        try:
            await body(counters, errors)
        finally:
            await counters.close()

    asyncio.run(main())
    return errors


def counts(snapshot: dict[str, int]) -> tuple[int, ...]:
    return tuple(snapshot[name] for name in COUNTER_NAMES)


def test_reserve_counts_before_and_snapshot_only_reads(server: RedisServer) -> None:
    async def body(s: RedisCounters, _: Errors) -> None:
        seen = [counts(dict((await s.reserve("alice", "s1", "python")).counts)) for _ in range(3)]
        assert seen == [(0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 2, 2)]
        assert counts(await s.snapshot("alice", "s1", "python")) == (3, 3, 3, 3)
        assert counts(await s.snapshot("alice", "s1", "python")) == (3, 3, 3, 3)
        # Another tool in the same session, another session, no session, another principal.
        assert counts(await s.snapshot("alice", "s1", "shell")) == (3, 0, 3, 0)
        assert counts(await s.snapshot("alice", "s2", "python")) == (3, 3, 0, 0)
        assert counts(await s.snapshot("alice", "", "python")) == (3, 3, 0, 0)
        assert counts(await s.snapshot("bob", "s1", "python")) == (0, 0, 0, 0)
        assert (await s.snapshot("bob", "s1", "python"))["window_seconds"] == 60

    assert with_store(server, body) == []


def test_the_same_counts_as_the_in_memory_store(server: RedisServer) -> None:
    async def body(s: RedisCounters, _: Errors) -> None:
        memory = CallCounters(60)
        calls = [("a", "s1", "t1"), ("a", "s1", "t2"), ("a", "", "t1"), ("b", "s1", "t1"), ("a", "s2", "t1")] * 2
        for call in calls:
            assert dict((await s.reserve(*call)).counts) == dict((await memory.reserve(*call)).counts)

    with_store(server, body)


def test_window_expiry(server: RedisServer) -> None:
    async def body(s: RedisCounters, _: Errors) -> None:
        await s.reserve("alice", "s", "python")
        await s.reserve("alice", "s", "python")
        assert counts(await s.snapshot("alice", "s", "python")) == (2, 2, 2, 2)
        await asyncio.sleep(1.1)
        assert counts(await s.snapshot("alice", "s", "python")) == (0, 0, 0, 0)
        # The keys expired as well (PEXPIRE to the window): nothing is left behind.
        with server.admin() as admin:
            assert admin.keys("*") == []

    with_store(server, body, window=1)


def test_keys_expire_a_window_after_the_last_call(server: RedisServer) -> None:
    async def body(s: RedisCounters, _: Errors) -> None:
        await s.reserve("alice", "s", "python")
        with server.admin() as admin:
            keys = admin.keys("*")
            assert sorted(keys) == sorted(redis_keys(PREFIX, "alice", "s", "python"))
            for key in keys:
                assert 55_000 < admin.pttl(key) <= 60_000

    with_store(server, body)


def test_release_takes_back_only_its_own_call(server: RedisServer) -> None:
    async def body(s: RedisCounters, _: Errors) -> None:
        kept = await s.reserve("alice", "s", "python")
        released = await s.reserve("alice", "s", "python")
        released.release()
        released.release()  # twice is once
        kept.keep()
        for _ in range(100):
            if counts(await s.snapshot("alice", "s", "python")) == (1, 1, 1, 1):
                break
            await asyncio.sleep(0.01)
        assert counts(await s.snapshot("alice", "s", "python")) == (1, 1, 1, 1)

    assert with_store(server, body) == []


@pytest.mark.parametrize(
    ("one", "other"),
    [
        # A ':' inside a session id must not reach into the tool's place.
        (("a", "x:st:y", "t"), ("a", "x", "st:y:t")),
        (("a", "s:t", "u"), ("a", "s", "t:u")),
        # ... nor into the principal's.
        (("a:s", "x", "t"), ("a", "s:x", "t")),
        # Braces (the cluster hash tag) in a principal.
        (("a}", "x", "t"), ("a", "}x", "t")),
        # No session is not a session named like the in-memory marker.
        (("a", "", "t"), ("a", "none", "t")),
    ],
)
def test_key_encoding_keeps_sessions_apart(
    server: RedisServer, one: tuple[str, str, str], other: tuple[str, str, str]
) -> None:
    assert redis_keys(PREFIX, *one)[2:] != redis_keys(PREFIX, *other)[2:]
    for key in redis_keys(PREFIX, *one):
        assert key.startswith(PREFIX + ":{")

    async def body(s: RedisCounters, _: Errors) -> None:
        await s.reserve(*one)
        after = await s.snapshot(*other)
        assert (after["session_calls"], after["session_tool_calls"]) == (0, 0)

    with_store(server, body)


def test_a_hung_server_is_a_timeout_then_recovers(server: RedisServer) -> None:
    async def body(s: RedisCounters, errors: Errors) -> None:
        await s.reserve("alice", "s", "python")  # connected before the hang
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(BudgetError) as info:
                await s.reserve("alice", "s", "python")
            assert time.monotonic() - started < 1.0
            assert (info.value.code, info.value.cause) == ("budget_unavailable", "timeout")
            with pytest.raises(BudgetError):
                await s.snapshot("alice", "s", "python")
        finally:
            server.resume()
        assert errors[:2] == [("reserve", "timeout"), ("snapshot", "timeout")]
        # Back; the timed-out reservation was taken back, so only the first counts.
        now: dict[str, int] = {}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                now = await s.snapshot("alice", "s", "python")
            except BudgetError:
                now = {}
            if now and counts(now) == (1, 1, 1, 1):
                break
            await asyncio.sleep(0.05)
        assert counts(now) == (1, 1, 1, 1)

    with_store(server, body)


def test_wrong_password_is_budget_unavailable(server: RedisServer) -> None:
    errors = Errors()

    async def main() -> None:
        s = RedisCounters(settings(server, password="not-the-password"), 60, errors)
        try:
            with pytest.raises(BudgetError) as info:
                await s.reserve("alice", "s", "python")
            assert (info.value.code, info.value.cause) == ("budget_unavailable", "auth")
            with pytest.raises(BudgetError):
                await s.ping()
        finally:
            await s.close()

    asyncio.run(main())
    assert errors == [("reserve", "auth")]


def test_a_stopped_server_fails_closed_and_a_release_does_not_raise(server: RedisServer) -> None:
    async def body(s: RedisCounters, errors: Errors) -> None:
        held = await s.reserve("alice", "s", "python")
        server.stop()
        with pytest.raises(BudgetError) as info:
            await s.reserve("alice", "s", "python")
        assert info.value.cause == "unreachable"
        held.release()  # must not raise: logged and counted
        for _ in range(100):
            if ("release", "unreachable") in errors:
                break
            await asyncio.sleep(0.02)
        assert errors[0] == ("reserve", "unreachable")
        assert set(errors[1:]) == {("release", "unreachable")}  # retried in the background
        server.start()
        assert counts(await s.snapshot("alice", "s", "python")) == (0, 0, 0, 0)  # nothing persisted

    with_store(server, body)


def test_an_unexpected_reply_fails_closed(server: RedisServer) -> None:
    with server.admin() as admin:
        admin.set(redis_keys(PREFIX, "alice", "s", "python")[0], "not a sorted set")

    async def body(s: RedisCounters, _: Errors) -> None:
        with pytest.raises(BudgetError) as info:
            await s.reserve("alice", "s", "python")
        assert info.value.cause == "reply"

    assert with_store(server, body) == [("reserve", "reply")]


def test_the_gateway_user_can_do_nothing_else(server: RedisServer) -> None:
    with redis.Redis(
        unix_socket_path=str(server.socket_path), username="airlock-gateway", password=server.password
    ) as client:
        assert client.ping()
        for command in (("GET", f"{PREFIX}:x"), ("SET", "other:x", "1"), ("KEYS", "*"), ("FLUSHALL",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        # Not even through a script.
        with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)permission"):
            client.eval("return redis.call('ZADD', KEYS[1], 1, 'm')", 1, "other:key")


def test_unauthenticated_commands_get_noauth(server: RedisServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(200).startswith(b"-NOAUTH")
        sock.sendall(b"AUTH default x\r\n")
        assert sock.recv(200).startswith(b"-WRONGPASS")
        sock.sendall(b"AUTH airlock-gateway guess\r\n")
        assert sock.recv(200).startswith(b"-WRONGPASS")
        sock.sendall(b"ZCARD airlock:budget:x\r\n")
        assert sock.recv(200).startswith(b"-NOAUTH")


def test_a_tcp_url_works_too(server: RedisServer) -> None:
    async def main() -> None:
        s = RedisCounters(settings(server, url=server.tcp_url), 60)
        try:
            assert counts(dict((await s.reserve("alice", "s", "python")).counts)) == (0, 0, 0, 0)
        finally:
            await s.close()

    asyncio.run(main())


# -- the core: a store that cannot count is a deny, audited and counted --------


@pytest.mark.parametrize("rpc", ["Invoke", "Decide"])
def test_the_core_denies_budget_unavailable(server: RedisServer, tmp_path: Path, rpc: str) -> None:
    path = tmp_path / "tool_registry.yaml"
    path.write_text(yaml.safe_dump(REGISTRY), encoding="utf-8")
    registry = load_registry(path)
    prom = CollectorRegistry()
    metrics = GatewayMetrics(prom, registry.tools.keys())

    def on_error(operation: str, cause: str) -> None:
        metrics.budget_store_errors.labels(operation, cause).inc()

    audit, executor, policy = FakeAudit(), FakeExecutor(), FakePolicy()

    async def main() -> None:
        counters = RedisCounters(settings(server), 60, on_error)
        gateway = Gateway(
            registry=registry,
            policy=policy,
            executor=executor,
            audit=audit,
            metrics=metrics,
            settings=CoreSettings(DECISION_PATH, GRANTED_PATH, 1024),
            counters=counters,
        )
        try:
            server.stop()
            if rpc == "Invoke":
                decision = (await gateway.invoke(call_input(rpc="Invoke"))).decision
            else:
                decision = await gateway.decide(call_input(rpc="Decide"))
            assert not decision.allowed
            assert decision.refusal == "permission_denied"
            assert [r.code for r in decision.reasons] == ["budget_unavailable"]
            assert "unreachable" in decision.reasons[0].message
            assert policy.calls == []  # never asked: no counters, no decision
            assert executor.plans == []
            (event,) = audit.events
            assert (event.kind, event.decision, event.reasons[0].code) == ("decision", "deny", "budget_unavailable")
            sample = prom.get_sample_value
            assert sample("airlock_gateway_fail_closed_total", {"cause": "budget_unavailable"}) == 1
            operation = "reserve" if rpc == "Invoke" else "snapshot"
            labels = {"operation": operation, "cause": "unreachable"}
            assert sample("airlock_gateway_budget_store_errors_total", labels) == 1
            # Back: the next call is decided (and allowed) again.
            server.start()
            again = await gateway.decide(call_input(call_id="call-2", rpc="Decide"))
            assert again.allowed, again.reasons
        finally:
            await counters.close()

    asyncio.run(main())
