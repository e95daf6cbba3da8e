"""The Airlock gateway: authenticates agents, asks OPA about every tool call,
audits the decision, and forwards allowed calls to the executor.

Modules: _core (the order of checks, no grpc) with _input (fields,
arguments, policy input), _json (strict JSON), _answer (OPA's answer),
_events (audit events), _budget (counters), _admission (per-principal caps);
_policy (OPA client), _registry (tool registry), _audit (sink, masking in
_mask), _metrics, _auth, _executor_client, _server (gRPC transport), _main
(process wiring)."""

from __future__ import annotations

from airlock.gateway._config import GatewayConfig, load_gateway_config
from airlock.gateway._input import build_policy_input, parse_arguments
from airlock.gateway._model import Call, CallInput, Principal
from airlock.gateway._registry import Registry, load_registry

__all__ = [
    "Call",
    "CallInput",
    "GatewayConfig",
    "Principal",
    "Registry",
    "build_policy_input",
    "load_gateway_config",
    "load_registry",
    "parse_arguments",
]
