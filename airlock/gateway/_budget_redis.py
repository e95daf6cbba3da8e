"""The budget store shared by several gateways: sliding-window call counters
in Redis, behind the same ``CounterStore`` seam as the in-memory one
(_budget.py).

Each counter is a sorted set of the calls in its window: the member is one
reservation's random id, the score the time it was counted. One Lua script
trims, counts and (for a reservation) adds to the four keys of a call at
once, so two gateways reserving in parallel each see the other's call. The
time comes from Redis (``TIME`` inside the script), so gateways whose clocks
disagree still share one window; every key expires a window after its last
call, so memory is bounded by the calls of one window.

Fail closed: Redis unreachable, slower than the timeout, refusing our
credentials or answering anything unexpected raises ``BudgetError``
(``budget_unavailable``), and the call is denied. A release that fails is
logged and counted; the call it was for then counts until the window
passes (an over-count, never an under-count).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from airlock.gateway._budget import COUNTER_NAMES, Reservation, counter_keys
from airlock.gateway._errors import BudgetError

log = logging.getLogger("airlock.gateway.budget")

#: How long a failed release is retried before the call is left counted.
RELEASE_RETRY_S = 10.0

# KEYS: a call's four counters. ARGV[1]: the window in ms; ARGV[2]: the
# reservation's member, or "" to count only. Returns the counts *before*
# this call. TIME inside the script: effects replication (the only mode
# since Redis 7) allows it, and one clock decides for every gateway.
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local counts = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  counts[i] = redis.call('ZCARD', key)
  if ARGV[2] ~= '' then
    redis.call('ZADD', key, now, ARGV[2])
    redis.call('PEXPIRE', key, window)
  end
end
return counts
"""
_RELEASE = """
for _, key in ipairs(KEYS) do
  redis.call('ZREM', key, ARGV[1])
end
return #KEYS
"""


@dataclass(frozen=True)
class RedisSettings:
    """Where the shared counters live and how to reach them."""

    url: str
    """``unix:///path/redis.sock``, ``redis://host:port`` or ``rediss://host:port``."""
    username: str
    """The ACL user."""
    password: str | None
    """Its password (read from the password file by the caller)."""
    timeout_s: float
    """Per operation; slower is a failure (``budget_unavailable``)."""
    key_prefix: str
    """Namespace of every key."""
    ca_file: str | None = None
    """CA bundle for ``rediss://``."""
    cert_file: str | None = None
    """Client certificate for ``rediss://`` with mutual TLS."""
    key_file: str | None = None
    """Its key."""


def _enc(component: str) -> str:
    # base64url has no ':' '{' or '}', so no component can reach into
    # another's place, whatever string a caller sends as a session id.
    return base64.urlsafe_b64encode(component.encode("utf-8", "surrogatepass")).decode().rstrip("=")


def redis_keys(prefix: str, principal: str, session: str, tool: str) -> list[str]:
    """The four counter keys, in COUNTER_NAMES order. The principal is the
    hash tag, so one call's keys share a Redis Cluster slot (the script
    touches all four)."""
    keys = counter_keys(principal, session, tool)
    out = []
    for name in COUNTER_NAMES:
        kind, owner, *rest = keys[name]
        out.append(f"{prefix}:{{{_enc(owner)}}}:{kind}" + "".join(f":{_enc(c)}" for c in rest))
    return out


def _cause(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, rexc.TimeoutError)):
        return "timeout"
    if isinstance(exc, (rexc.AuthenticationError, rexc.AuthorizationError, rexc.NoPermissionError)):
        return "auth"
    if isinstance(exc, rexc.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
        return "auth"
    if isinstance(exc, (rexc.ConnectionError, OSError)):
        return "unreachable"
    return "reply"


class RedisCounters:
    """Sliding-window counters in Redis, shared by every gateway that uses
    the same server and key prefix."""

    def __init__(
        self,
        settings: RedisSettings,
        window_seconds: int,
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:
        self.window_seconds = window_seconds
        self._settings = settings
        self._timeout = settings.timeout_s
        self._on_error = on_error if on_error is not None else (lambda _op, _cause: None)
        self._client = _client(settings)
        self._count = self._client.register_script(_COUNT)
        self._release = self._client.register_script(_RELEASE)
        #: Releases in progress (a task nobody holds can be collected).
        self._pending: set[asyncio.Task[None]] = set()

    async def snapshot(self, principal: str, session: str, tool: str) -> dict[str, int]:
        keys = redis_keys(self._settings.key_prefix, principal, session, tool)
        counts = await self._run("snapshot", keys, "")
        return {"window_seconds": self.window_seconds, **counts}

    async def reserve(self, principal: str, session: str, tool: str) -> Reservation:
        keys = redis_keys(self._settings.key_prefix, principal, session, tool)
        member = uuid.uuid4().hex
        try:
            counts = await self._run("reserve", keys, member)
        except BudgetError as exc:
            if exc.cause == "timeout":
                # The script may have run after we stopped waiting: take the
                # member back so a refused call does not count.
                self._release_later(keys, member)
            raise
        return Reservation({"window_seconds": self.window_seconds, **counts}, lambda: self._release_later(keys, member))

    async def ping(self) -> None:
        """Raises BudgetError unless the server answers us (at start)."""
        try:
            await asyncio.wait_for(self._client.ping(), self._timeout)
        except Exception as exc:
            raise BudgetError(f"budget store: {_describe(exc)}", cause=_cause(exc)) from exc

    async def close(self) -> None:
        """Lets releases in flight finish (briefly), then disconnects."""
        if self._pending:
            _, late = await asyncio.wait(set(self._pending), timeout=max(self._timeout * 4, 0.5))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._client.aclose()

    async def _run(self, operation: str, keys: Sequence[str], member: str) -> dict[str, int]:
        window_ms = self.window_seconds * 1000
        try:
            reply = await asyncio.wait_for(self._count(keys=list(keys), args=[window_ms, member]), self._timeout)
        except Exception as exc:
            cause = _cause(exc)
            self._on_error(operation, cause)
            raise BudgetError(f"budget store: {_describe(exc)}", cause=cause) from exc
        if (
            not isinstance(reply, list)
            or len(reply) != len(COUNTER_NAMES)
            or not all(type(n) is int and n >= 0 for n in reply)
        ):
            self._on_error(operation, "reply")
            raise BudgetError(f"budget store: unexpected reply {str(reply)[:80]!r}", cause="reply")
        return dict(zip(COUNTER_NAMES, reply, strict=True))

    def _release_later(self, keys: Sequence[str], member: str) -> None:
        # Reservation.release is synchronous (the core calls it on every
        # deny); the ZREM runs as a task of its own.
        task = asyncio.get_running_loop().create_task(self._release_now(keys, member))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _release_now(self, keys: Sequence[str], member: str) -> None:
        # Retried for a while: a store that hiccups (or the hang that timed
        # out the reservation itself) should not leave a refused call counted.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELEASE_RETRY_S
        delay = 0.05
        while True:
            try:
                await asyncio.wait_for(self._release(keys=list(keys), args=[member]), self._timeout * 4)
            except Exception as exc:  # noqa: BLE001 - a release never raises: counted, retried, logged
                cause = _cause(exc)
                self._on_error("release", cause)
                if loop.time() + delay > deadline:
                    log.warning("budget release failed (%s); the call counts until its window passes: %s", cause, exc)
                    return
            else:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def _describe(exc: BaseException) -> str:
    cause = _cause(exc)
    text = str(exc) or type(exc).__name__
    return f"{cause}: {text}"[:300]


def _client(s: RedisSettings) -> aioredis.Redis:
    # No retries: a slow or absent store is a deny within the timeout, not
    # a call that waits several of them.
    no_retry = Retry(NoBackoff(), 0)
    if s.url.startswith("unix://"):
        return aioredis.Redis(
            unix_socket_path=s.url.removeprefix("unix://"),
            username=s.username,
            password=s.password,
            socket_timeout=s.timeout_s,
            socket_connect_timeout=s.timeout_s,
            retry=no_retry,
        )
    if s.url.startswith("rediss://"):
        return aioredis.Redis.from_url(
            s.url,
            username=s.username,
            password=s.password,
            socket_timeout=s.timeout_s,
            socket_connect_timeout=s.timeout_s,
            retry=no_retry,
            ssl_ca_certs=s.ca_file,
            ssl_certfile=s.cert_file,
            ssl_keyfile=s.key_file,
        )
    return aioredis.Redis.from_url(
        s.url,
        username=s.username,
        password=s.password,
        socket_timeout=s.timeout_s,
        socket_connect_timeout=s.timeout_s,
        retry=no_retry,
    )
