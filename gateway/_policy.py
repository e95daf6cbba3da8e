"""The policy engine seam and its OPA implementation.

The gateway asks OPA's REST Data API (``POST /v1/data/<path>``) over a
keep-alive connection. Every way OPA can fail to give a decision -- down,
slow, erroring, undefined, or answering something that is not a decision --
raises PolicyError with its own code; the caller turns that into a deny.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from gateway._errors import PolicyError


@dataclass(frozen=True)
class PolicyResult:
    """A defined result and the bundle revision that produced it."""

    result: Any
    revision: str
    eval_ns: int | None = None


class PolicyEngine(Protocol):
    """Evaluates one document at ``path`` for ``input``."""

    async def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> PolicyResult: ...

    async def close(self) -> None: ...


class OpaClient:
    """PolicyEngine backed by an OPA server.

    httpx rather than opa-python-client: the latter is synchronous and folds
    every failure into one exception type, and we need a non-blocking call
    whose timeout and connection failures are told apart.
    """

    def __init__(self, base_url: str, timeout_ms: int) -> None:
        self._timeout_s = timeout_ms / 1000
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(self._timeout_s),
            limits=httpx.Limits(max_keepalive_connections=32, max_connections=64),
        )

    async def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> PolicyResult:
        try:
            # One deadline for the whole exchange: httpx's timeouts are per
            # phase, and a server trickling bytes could otherwise stall us.
            async with asyncio.timeout(self._timeout_s):
                resp = await self._client.post(
                    f"/v1/data/{path}",
                    params={"provenance": "true", "metrics": "true"},
                    json={"input": input_doc},
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise PolicyError(
                f"OPA did not answer within {self._timeout_s * 1000:.0f} ms", code="policy_timeout"
            ) from exc
        except httpx.TransportError as exc:
            raise PolicyError(f"OPA unreachable: {exc!r}", code="policy_unreachable") from exc
        if resp.status_code != httpx.codes.OK:
            raise PolicyError(f"OPA answered HTTP {resp.status_code}: {resp.text[:200]}", code="policy_http_error")
        try:
            body = resp.json()
        except ValueError as exc:
            raise PolicyError("OPA answered with a body that is not JSON", code="policy_malformed") from exc
        if not isinstance(body, dict):
            raise PolicyError("OPA answered with a body that is not a JSON object", code="policy_malformed")
        if "result" not in body:
            # OPA's Data API answers 200 without "result" when the document is
            # undefined (no rule matched, or the path does not exist).
            raise PolicyError(f"policy decision at {path!r} is undefined", code="policy_undefined")
        for key in ("provenance", "metrics"):
            if key in body and not isinstance(body[key], dict):
                raise PolicyError(f"OPA answered with a non-object {key!r}", code="policy_malformed")
        return PolicyResult(result=body["result"], revision=_revision(body), eval_ns=_eval_ns(body))

    async def close(self) -> None:
        await self._client.aclose()


def _revision(body: Mapping[str, Any]) -> str:
    provenance = body.get("provenance")
    bundles = provenance.get("bundles") if isinstance(provenance, dict) else None
    if bundles is None:
        return ""
    if not isinstance(bundles, dict):
        raise PolicyError("OPA answered with a non-object provenance.bundles", code="policy_malformed")
    revisions = sorted(
        f"{name}@{info.get('revision', '')}" if len(bundles) > 1 else str(info.get("revision", ""))
        for name, info in bundles.items()
        if isinstance(info, dict)
    )
    return ",".join(revisions)


def _eval_ns(body: Mapping[str, Any]) -> int | None:
    metrics = body.get("metrics")
    value = metrics.get("timer_rego_query_eval_ns") if isinstance(metrics, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
