"""gateway._policy.OpaClient against tiny HTTP servers started in-process on
127.0.0.1: every way of not getting a decision has its own PolicyError code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import pytest

from airlock.gateway._errors import PolicyError
from airlock.gateway._policy import OpaClient, PolicyResult

Responder = Callable[[bytes], Awaitable[tuple[int, bytes]]]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Clear proxy variables: loopback tests must never leave the host, whatever the client.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


class LoopbackServer:
    """A one-request-per-connection HTTP/1.1 server on 127.0.0.1."""

    def __init__(self, respond: Responder) -> None:
        self._respond = respond
        self._tasks: set[asyncio.Task[Any]] = set()
        self.requests: list[tuple[str, bytes]] = []
        self.url = ""

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *header_lines = head.split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((request_line, body))
            status, payload = await self._respond(body)
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def answer(status: int, payload: Any) -> Responder:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()

    async def respond(_body: bytes) -> tuple[int, bytes]:
        return status, raw

    return respond


async def _evaluate(respond: Responder, timeout_ms: int = 1000) -> tuple[PolicyResult, LoopbackServer]:
    async with LoopbackServer(respond) as server:
        client = OpaClient(server.url, timeout_ms)
        try:
            result = await client.evaluate("airlock/decision", {"call": {"tool": "python"}})
        finally:
            await client.close()
        return result, server


def _code_of(respond: Responder, timeout_ms: int = 1000) -> tuple[str, str]:
    with pytest.raises(PolicyError) as info:
        asyncio.run(_evaluate(respond, timeout_ms))
    return info.value.code, str(info.value)


def test_defined_result_with_revision_and_request_shape() -> None:
    body = {
        "result": {"allow": True},
        "provenance": {"bundles": {"b": {"revision": "r1"}}},
        "metrics": {"timer_rego_query_eval_ns": 1234},
    }
    result, server = asyncio.run(_evaluate(answer(200, body)))
    assert result == PolicyResult(result={"allow": True}, revision="r1", eval_ns=1234, bundles={"b": "r1"})
    ((request_line, sent),) = server.requests
    method, target, _ = request_line.split(" ")
    assert method == "POST"
    url = urlsplit(target)
    assert url.path == "/v1/data/airlock/decision"
    assert parse_qs(url.query) == {"provenance": ["true"], "metrics": ["true"]}
    assert json.loads(sent) == {"input": {"call": {"tool": "python"}}}


@pytest.mark.parametrize(
    ("body", "revision"),
    [
        pytest.param({"result": False}, "", id="no-provenance"),
        pytest.param({"result": False, "provenance": {"bundles": {}}}, "", id="no-bundles"),
        pytest.param({"result": False, "provenance": {"bundles": {"b": {}}}}, "", id="no-revision"),
        pytest.param(
            {"result": False, "provenance": {"bundles": {"z": {"revision": "2"}, "a": {"revision": "1"}}}},
            "a@1,z@2",
            id="two-bundles",
        ),
    ],
)
def test_revision_from_provenance(body, revision) -> None:
    result, _ = asyncio.run(_evaluate(answer(200, body)))
    assert result.result is False
    assert result.revision == revision
    assert result.eval_ns is None


@pytest.mark.parametrize(
    ("result_value"),
    [pytest.param(None, id="null"), pytest.param([], id="empty-list"), pytest.param({}, id="empty-object")],
)
def test_defined_but_falsy_result_is_not_undefined(result_value) -> None:
    result, _ = asyncio.run(_evaluate(answer(200, {"result": result_value})))
    assert result.result == result_value


def test_connection_refused_is_policy_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port any more.

    async def run() -> None:
        client = OpaClient(f"http://127.0.0.1:{port}", 1000)
        try:
            await client.evaluate("airlock/decision", {})
        finally:
            await client.close()

    with pytest.raises(PolicyError) as info:
        asyncio.run(run())
    assert info.value.code == "policy_unreachable"
    assert "OPA unreachable" in str(info.value)


def test_slow_server_is_policy_timeout() -> None:
    async def slow(_body: bytes) -> tuple[int, bytes]:
        await asyncio.sleep(10)
        return 200, b'{"result": true}'

    started = time.monotonic()
    code, message = _code_of(slow, timeout_ms=100)
    elapsed = time.monotonic() - started
    assert code == "policy_timeout"
    assert "within 100 ms" in message
    assert elapsed < 2


def test_trickling_server_is_policy_timeout() -> None:
    """Headers arrive at once but the body never completes: one overall deadline."""

    async def respond(_body: bytes) -> tuple[int, bytes]:
        return 200, b'{"result": true}'

    class Trickle(LoopbackServer):
        async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
                for _ in range(100):
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(0.04)
            except ConnectionError:
                pass
            finally:
                writer.close()

    async def run() -> None:
        async with Trickle(respond) as server:
            client = OpaClient(server.url, 200)
            try:
                await client.evaluate("airlock/decision", {})
            finally:
                await client.close()

    with pytest.raises(PolicyError) as info:
        asyncio.run(run())
    assert info.value.code == "policy_timeout"


@pytest.mark.parametrize(
    ("status", "payload", "code", "message"),
    [
        pytest.param(500, {"code": "internal_error"}, "policy_http_error", "OPA answered HTTP 500", id="http-500"),
        pytest.param(400, {"code": "invalid_parameter"}, "policy_http_error", "HTTP 400", id="http-400"),
        pytest.param(404, b"not found", "policy_http_error", "HTTP 404: not found", id="http-404"),
        pytest.param(200, {}, "policy_undefined", "policy decision at 'airlock/decision' is undefined", id="undefined"),
        pytest.param(200, {"provenance": {}}, "policy_undefined", "undefined", id="undefined-with-provenance"),
        pytest.param(200, b"<html>proxy error</html>", "policy_malformed", "not JSON", id="not-json"),
        pytest.param(200, b"", "policy_malformed", "not JSON", id="empty-body"),
        pytest.param(200, [{"result": True}], "policy_malformed", "not a JSON object", id="json-list"),
        pytest.param(200, "result", "policy_malformed", "not a JSON object", id="json-string"),
    ],
)
def test_unusable_answers(status, payload, code, message) -> None:
    got_code, got_message = _code_of(answer(status, payload))
    assert got_code == code
    assert message in got_message


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"result": True, "provenance": "r1"}, id="provenance-string"),
        pytest.param({"result": True, "provenance": {"bundles": ["b"]}}, id="bundles-list"),
        pytest.param({"result": True, "metrics": [1]}, id="metrics-list"),
    ],
)
def test_malformed_provenance_is_policy_malformed(body) -> None:
    code, _ = _code_of(answer(200, body))
    assert code == "policy_malformed"
