"""HTTP/1.1 on an inspected connection: every request checked, secrets set.

Once the proxy has terminated the sandbox's TLS (a certificate for the
CONNECT host from the executor's CA) and opened its own verified TLS
connection upstream, this module relays HTTP/1.1 between the two, one
request at a time, with h11 parsing both sides (never a hand-written parser
on this path). For each request:

- the Host header and an absolute-form target must name the CONNECT host
  and port (``host_mismatch``): no fronting inside the tunnel either;
- a host with HTTP rules allows only a method and path some rule matches
  (``request_not_allowed``), with a body no larger than that rule's cap
  (``body_too_large``); paths with dot segments, empty segments or an
  encoded ``/`` or ``.`` are refused when rules apply, since the server
  would read them differently from the pattern;
- a placeholder of a secret bound to another host refuses the request
  (``secret_wrong_host``); placeholders of this host's secrets are replaced
  by their values, and each of this host's secrets is set in its header;
- a request that carries a secret asks for ``Accept-Encoding: identity``,
  and the answer's headers and body have every secret value replaced by its
  placeholder before they reach the sandbox (the body is re-framed as
  chunked, since scrubbing may change its length).

A refused request gets ``403`` with ``X-Airlock-Egress-Reason`` and the
connection closes (its body, if any, is never read). Every request becomes
an HttpRequestRecord: method, path without the query string, status, bytes,
the rule that matched, the names (never the values) of the secrets set.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import h11

from airlock.common.egress_http import HttpRule
from airlock.executor._errors import HostError
from airlock.executor._model import HttpRequestRecord
from airlock.executor.egress.rules import Host, normalize_host

__all__ = ["HostRules", "Injection", "Meter", "Records", "relay"]

#: A request or response head larger than this is refused (as the proxy's
#: own head cap for plain requests).
MAX_HEAD_BYTES = 64 * 1024
CHUNK = 64 * 1024
#: Hop-by-hop headers (RFC 9110 7.6.1), never passed on; framing headers are
#: h11's to set for each side.
_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"proxy-authenticate",
     b"te", b"trailer", b"upgrade", b"transfer-encoding", b"content-length"}
)  # fmt: skip
#: What a path under rules may not hold, since a server could read it as
#: another path than the pattern saw: dot segments, empty segments, `;`
#: parameters, backslashes, and any percent-encoding of an unreserved
#: character, of a slash or backslash, `%` or `;`, or of a byte above 0x7f (double
#: decoding, overlong UTF-8). Only a canonical path is matched.
_ODD_PATH = re.compile(
    r"(^|/)\.{1,2}(/|$)|//|[;\\]|[^\x21-\x7e]"
    r"|%(2[dDeEfF5]|3[0-9bB]|[46][1-9a-fA-F]|[57][0-9aA]|5[cCfF]|7[eE]|[89a-fA-F][0-9a-fA-F])"
)


@dataclass(frozen=True)
class Injection:
    """One secret ready for one host: the header it sets and the value
    (``format`` applied), the raw value (what scrubbing looks for) and the
    call's placeholder for it."""

    name: str
    header: bytes
    header_value: bytes
    secret: bytes
    placeholder: bytes


@dataclass(frozen=True)
class HostRules:
    """What applies to one inspected host:port."""

    host: Host
    port: int
    rules: tuple[HttpRule, ...] = ()
    injections: tuple[Injection, ...] = ()
    #: Placeholders of the call's secrets for other hosts: never sent here.
    foreign: Mapping[bytes, str] = field(default_factory=dict)


class Meter(Protocol):
    """The call's byte budgets: False when ``n`` more bytes would cross one."""

    def take_out(self, n: int) -> bool: ...
    def take_in(self, n: int) -> bool: ...


class _Refused(Exception):  # noqa: N818 - control flow: a request the rules refuse
    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class _Cut(Exception):  # noqa: N818 - control flow: a byte budget ended the connection
    def __init__(self, direction: str) -> None:
        super().__init__(direction)
        self.direction = direction


def _glob(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*|\*)", pattern)
    body = "".join(".*" if p == "**" else "[^/]*" if p == "*" else re.escape(p) for p in parts)
    return re.compile(f"{body}\\Z")


class _Scrubber:
    """Replaces secret values with placeholders in a stream of chunks; keeps
    back the last len(longest)-1 bytes, which may start a value."""

    def __init__(self, injections: Iterable[Injection]) -> None:
        self._pairs = [(i.secret, i.placeholder) for i in injections if i.secret]
        self._keep = max((len(s) for s, _ in self._pairs), default=1) - 1
        self._tail = b""

    def feed(self, data: bytes) -> bytes:
        text = self._scrub(self._tail + data)
        cut = max(len(text) - self._keep, 0)
        self._tail = text[cut:]
        return text[:cut]

    def flush(self) -> bytes:
        rest, self._tail = self._tail, b""
        return rest

    def _scrub(self, data: bytes) -> bytes:
        for secret, placeholder in self._pairs:
            data = data.replace(secret, placeholder)
        return data

    def header(self, value: bytes) -> bytes:
        return self._scrub(value)


class _Side:
    """One h11 connection over one stream pair. What is sent is held back
    (up to CHUNK) and written in one go before anything is read from either
    side: a small answer's head and body make one TLS record and one
    system call, not three."""

    def __init__(
        self, role: type[h11.CLIENT | h11.SERVER], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.conn = h11.Connection(role, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.reader = reader
        self.writer = writer
        self.pending = bytearray()
        self.other: _Side | None = None

    async def next_event(self) -> object:
        """An h11 event (or PAUSED); reads as much as it needs, after
        everything held back on both sides went out."""
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            await self.flush()
            if self.other is not None:
                await self.other.flush()
            data = await self.reader.read(CHUNK)
            self.conn.receive_data(data)

    async def queue(self, data: bytes) -> None:
        self.pending += data
        if len(self.pending) >= CHUNK:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            self.writer.write(bytes(self.pending))
            self.pending.clear()
            await self.writer.drain()

    async def send(self, event: h11.Event) -> int:
        data = self.conn.send(event) or b""
        await self.queue(data)
        return len(data)


async def relay(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    rules: HostRules,
    meter: Meter,
    records: Records,
    *,
    idle_timeout_s: float,
) -> str:
    """Relays requests until either side closes; returns how the connection
    ended: "" (closed, or idle for ``idle_timeout_s`` between requests), a
    refusal's code, ``bad_request``, or ``bytes_out_limit``/``bytes_in_limit``.
    Each request is recorded once it is answered, refused or cut, and also
    when the connection ends under it (the call ended: ``call_ended``)."""
    down = _Side(h11.SERVER, *client)
    up = _Side(h11.CLIENT, *upstream)
    down.other, up.other = up, down
    try:
        return await _requests(down, up, rules, meter, records, idle_timeout_s)
    finally:
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            await down.flush()  # a refusal's answer, the last answer


async def _requests(  # noqa: PLR0917 - relay's loop
    down: _Side, up: _Side, rules: HostRules, meter: Meter, records: Records, idle_timeout_s: float
) -> str:
    while True:
        try:
            async with asyncio.timeout(idle_timeout_s):
                event = await down.next_event()
        except TimeoutError:
            return ""  # an idle keep-alive connection: closed, as servers do
        except h11.RemoteProtocolError:
            record = HttpRequestRecord("", "")
            await _refuse(down, record, "bad_request", "malformed HTTP/1.1 request", status=400)
            records.add(record)
            return "bad_request"
        if not isinstance(event, h11.Request):
            return ""  # ConnectionClosed, or a client that stopped mid-way
        record = HttpRequestRecord(method=event.method.decode("ascii", "replace"), path="")
        ended = await _one(down, up, event, rules, meter, records, record)
        if ended is not None:
            return ended
        try:
            down.conn.start_next_cycle()
            up.conn.start_next_cycle()
        except h11.LocalProtocolError:
            return ""  # one side asked to close after this exchange


async def _one(  # noqa: PLR0917 - one request's relay and its record
    down: _Side,
    up: _Side,
    event: h11.Request,
    rules: HostRules,
    meter: Meter,
    records: Records,
    record: HttpRequestRecord,
) -> str | None:
    """One request, recorded whatever happens; None when the connection
    goes on, else how it ended."""
    try:
        try:
            outgoing, body_cap = _check(event, rules, record)
        except _Refused as refused:
            await _refuse(down, record, refused.code, str(refused), status=refused.status)
            return refused.code
        try:
            if await _exchange(down, up, outgoing, body_cap, rules, meter, record):
                return ""
        except _Cut as cut:
            record.reason = f"bytes_{cut.direction}_limit"
            return record.reason
        except _Refused as refused:
            # A body over its cap found while streaming, or an answer that
            # cannot be scrubbed: the connection ends.
            await _refuse(down, record, refused.code, str(refused), status=refused.status)
            return refused.code
        except (h11.RemoteProtocolError, h11.LocalProtocolError):
            record.reason = record.reason or "bad_request"
            return "bad_request"
        else:
            return None
    except BaseException:
        record.reason = record.reason or "call_ended"
        raise
    finally:
        records.add(record)


class Records:
    """A connection's request records, at most ``limit`` kept (the call's
    max_records); the rest only counted."""

    def __init__(self, kept: list[HttpRequestRecord], limit: int) -> None:
        self.kept = kept
        self.limit = limit
        self.unrecorded = 0
        self.outcomes: Counter[str] = Counter()

    def add(self, record: HttpRequestRecord) -> None:
        self.outcomes[record.reason or "relayed"] += 1
        if len(self.kept) < self.limit:
            self.kept.append(record)
        else:
            self.unrecorded += 1


def _check(event: h11.Request, rules: HostRules, record: HttpRequestRecord) -> tuple[h11.Request, int | None]:
    """The request as it goes upstream, and its body cap; raises _Refused."""
    target = event.target.decode("ascii", "replace")
    path = _path_of(target, rules)
    record.path = path.partition("?")[0]
    headers = [(bytes(n).lower(), bytes(v)) for n, v in event.headers.raw_items()]
    hosts = [v for n, v in headers if n == b"host"]
    if len(hosts) != 1 or not _names(hosts[0].decode("ascii", "replace"), rules):
        raise _Refused("host_mismatch", f"the request's Host must name {rules.host.text}:{rules.port}")
    for placeholder, name in rules.foreign.items():
        if placeholder in event.target or any(placeholder in v for _, v in headers):
            raise _Refused("secret_wrong_host", f"the request carries secret {name!r}, which is not for this host")
    for injection in rules.injections:
        # Its own host, but only in its own header (which the proxy sets
        # anyway): anywhere else the sandbox would choose where the value
        # goes, and could have it echoed back in a form scrubbing misses.
        if injection.placeholder in event.target or any(
            injection.placeholder in v for n, v in headers if n != injection.header
        ):
            where = injection.header.decode()
            raise _Refused("secret_misplaced", f"secret {injection.name!r} may go only in its {where} header")
    body_cap = _rule_for(event.method.decode("ascii", "replace"), record, rules)
    declared = [v for n, v in headers if n == b"content-length"]
    if body_cap is not None and declared and int(declared[0]) > body_cap:
        raise _Refused("body_too_large", f"the request body is over {body_cap} bytes")
    out = _rewrite(headers, rules, record)
    if declared:
        out.append((b"content-length", declared[0]))
    elif any(n == b"transfer-encoding" for n, _ in headers):
        out.append((b"transfer-encoding", b"chunked"))
    return h11.Request(method=event.method, target=event.target, headers=out), body_cap


def _rewrite(
    headers: list[tuple[bytes, bytes]], rules: HostRules, record: HttpRequestRecord
) -> list[tuple[bytes, bytes]]:
    """Headers as they go upstream: no hop-by-hop or framing ones, this
    host's placeholders replaced, its secrets set (over any the sandbox
    sent), and an identity encoding asked for when a secret is set."""
    set_here = {i.header.lower() for i in rules.injections}
    # With a secret set: no partial answers (a range could carry part of
    # the value past the scrubber) and no encodings (which it cannot read).
    dropped = {b"accept-encoding", b"range", b"if-range"} if rules.injections else set()
    out = [(name, value) for name, value in headers if name not in _HOP and name not in set_here | dropped]
    for injection in rules.injections:
        out.append((injection.header, injection.header_value))
        record.secret_names.append(injection.name)
    if rules.injections:
        # The answer is scrubbed of the secrets: it must come unencoded.
        out.append((b"accept-encoding", b"identity"))
    return out


def _path_of(target: str, rules: HostRules) -> str:
    if target.startswith("/"):
        return target
    for scheme in ("https://", "http://"):
        if target.lower().startswith(scheme):
            authority, slash, rest = target[len(scheme) :].partition("/")
            if not _names(authority, rules):
                raise _Refused("host_mismatch", f"the request's target must name {rules.host.text}:{rules.port}")
            return slash + rest if slash else "/"
    raise _Refused("bad_request", "only origin-form and absolute-form request targets are relayed")


def _names(authority: str, rules: HostRules) -> bool:
    """Does ``authority`` (a Host value) name the connection's host and port?"""
    host, port = authority, ""
    if authority.startswith("["):
        end = authority.find("]")
        host, port = authority[: end + 1], authority[end + 2 :] if authority[end + 1 : end + 2] == ":" else ""
        if end < 0 or (authority[end + 1 :] and not authority[end + 1 :].startswith(":")):
            return False
    elif ":" in authority:
        host, _, port = authority.rpartition(":")
    try:
        named = normalize_host(host)
    except HostError:
        return False
    if port and (not port.isdigit() or int(port) != rules.port):
        return False
    if not port and rules.port != 443:  # noqa: PLR2004 - https' default port
        return False
    return named.name == rules.host.name


def _rule_for(method: str, record: HttpRequestRecord, rules: HostRules) -> int | None:
    """The body cap of the first rule that allows the request (None: no cap);
    raises _Refused when rules exist and none does."""
    if not rules.rules:
        return None
    if _ODD_PATH.search(record.path):
        why = "dot segments, '//', ';', a backslash or encoded characters"
        raise _Refused("request_not_allowed", f"{record.path!r} is not a canonical path ({why})")
    for index, rule in enumerate(rules.rules):
        if method in rule.methods and any(_glob(p).match(record.path) for p in rule.paths):
            record.rule = f"{rules.host.text}:{rules.port}#{index}"
            return rule.max_body_bytes or None
    raise _Refused("request_not_allowed", f"no rule allows {method} {record.path}")


async def _exchange(  # noqa: PLR0917 - one request's whole relay
    down: _Side,
    up: _Side,
    outgoing: h11.Request,
    body_cap: int | None,
    rules: HostRules,
    meter: Meter,
    record: HttpRequestRecord,
) -> bool:
    """One request upstream and its answer back; True when the connection
    must close afterwards."""
    await _out(up, outgoing, meter, record)
    if not await _body(down, up, body_cap, meter, record):
        return True  # the client went away mid-body
    return await _answer(down, up, rules, meter, record)


async def _body(down: _Side, up: _Side, body_cap: int | None, meter: Meter, record: HttpRequestRecord) -> bool:
    """The request's body, within its cap; False when the client left."""
    sent = 0
    while True:
        event = await down.next_event()
        if isinstance(event, h11.Data):
            sent += len(event.data)
            if body_cap is not None and sent > body_cap:
                raise _Refused("body_too_large", f"the request body is over {body_cap} bytes")
            await _out(up, event, meter, record)
        elif isinstance(event, h11.EndOfMessage):
            await _out(up, h11.EndOfMessage(), meter, record)
            return True
        else:
            return False


async def _answer(down: _Side, up: _Side, rules: HostRules, meter: Meter, record: HttpRequestRecord) -> bool:
    """The upstream's answer, scrubbed of this host's secrets; True when the
    connection must close afterwards."""
    scrub = _Scrubber(rules.injections) if rules.injections else None
    while True:
        answer = await up.next_event()
        if isinstance(answer, (h11.InformationalResponse, h11.Response)):
            if scrub and _encoded(answer):
                # The scrubber reads bytes as sent: a compressed answer
                # could carry the value past it.
                raise _Refused("encoded_answer", "the answer is encoded although identity was asked for", 502)
            headers = [
                (n, scrub.header(v) if scrub else v)
                for n, v in answer.headers.raw_items()
                if n.lower() not in _HOP or (n.lower() == b"content-length" and scrub is None)
            ]
            kind = type(answer)
            reason = b"" if scrub else answer.reason  # the phrase is the upstream's text too
            await _in(down, kind(status_code=answer.status_code, headers=headers, reason=reason), meter, record)
            if isinstance(answer, h11.Response):
                record.status = answer.status_code
        elif isinstance(answer, h11.Data):
            data = scrub.feed(answer.data) if scrub else answer.data
            if data:
                await _in(down, h11.Data(data=data), meter, record)
        elif isinstance(answer, h11.EndOfMessage):
            if scrub and (rest := scrub.flush()):
                await _in(down, h11.Data(data=rest), meter, record)
            await _in(down, h11.EndOfMessage(), meter, record)
            return up.conn.our_state is h11.MUST_CLOSE or down.conn.our_state is h11.MUST_CLOSE
        else:
            return True  # the upstream closed before a whole answer


def _encoded(answer: h11.InformationalResponse | h11.Response) -> bool:
    codings = b",".join(v for n, v in answer.headers.raw_items() if n.lower() == b"content-encoding")
    return any(c.strip() not in {b"", b"identity"} for c in codings.lower().split(b","))


async def _out(side: _Side, event: h11.Event, meter: Meter, record: HttpRequestRecord) -> None:
    data = side.conn.send(event) or b""
    if not meter.take_out(len(data)):
        raise _Cut("out")
    record.bytes_out += len(data)
    await side.queue(data)


async def _in(side: _Side, event: h11.Event, meter: Meter, record: HttpRequestRecord) -> None:
    data = side.conn.send(event) or b""
    if not meter.take_in(len(data)):
        raise _Cut("in")
    record.bytes_in += len(data)
    await side.queue(data)


async def _refuse(down: _Side, record: HttpRequestRecord, code: str, message: str, *, status: int = 403) -> None:
    """Answers the refusal (when no answer has started yet) and marks the
    record; the caller ends the connection."""
    body = f"airlock egress proxy: {message}\n".encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"x-airlock-egress-reason", code.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    try:
        if down.conn.our_state in {h11.IDLE, h11.SEND_RESPONSE}:
            await down.send(h11.Response(status_code=status, headers=headers))
            await down.send(h11.Data(data=body))
            await down.send(h11.EndOfMessage())
            record.status = status
    except (h11.LocalProtocolError, ConnectionError, OSError):
        pass
    record.reason = code
