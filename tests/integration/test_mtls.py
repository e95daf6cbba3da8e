"""Mutual TLS on both hops, with real daemons and certificates made by
openssl: a remote executor that accepts only the gateway's client
certificate, and agents that authenticate by certificate instead of token."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import (
    CERT_AGENT_URI,
    Stack,
    auth,
    decision_from_error,
    make_certs,
    make_gateway_config,
    private_copy,
    start_daemon,
    stop_daemon,
    tool_call,
)

from airlock.v1 import executor_pb2, executor_pb2_grpc, gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration
REGISTRY = str(Path(__file__).resolve().parents[2] / "deploy" / "tool_registry.yaml")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def remote_executor(stack: Stack, certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("remote-executor")
    proc, info = start_daemon(
        "executor",
        {
            "listen": "127.0.0.1:0",
            "tls": {
                "cert_file": str(certs / "server.pem"),
                "key_file": str(certs / "server.key"),
                "client_ca_file": str(certs / "ca.pem"),
            },
            "token_file": str(private_copy(stack.executor_token, folder / "executor.token")),
            "metrics_listen": "127.0.0.1:0",
            "registry_file": REGISTRY,
        },
        folder,
    )
    yield info
    assert stop_daemon(proc) == 0


def _remote_link(stack: Stack, certs: Path, remote_executor: dict[str, Any], folder: Path) -> dict[str, Any]:
    return {
        "address": remote_executor["listen"],
        "token_file": str(private_copy(stack.executor_token, folder / "remote-executor.token")),
        "tls": {
            "ca_file": str(certs / "ca.pem"),
            "cert_file": str(certs / "gateway-client.pem"),
            "key_file": str(certs / "gateway-client.key"),
        },
    }


def test_gateway_runs_calls_on_a_remote_executor_over_mtls(
    stack: Stack, certs: Path, remote_executor: dict[str, Any], tmp_path: Path
) -> None:
    link = _remote_link(stack, certs, remote_executor, tmp_path)
    proc, info = start_daemon("gateway", make_gateway_config(tmp_path, stack, executor=link), tmp_path)
    try:
        with grpc.insecure_channel(info["listen"]) as channel:
            resp = gateway_pb2_grpc.GatewayServiceStub(channel).Invoke(
                gateway_pb2.InvokeRequest(call=tool_call("python", '{"code": "print(6*7)"}')),
                metadata=auth(stack.token),
                timeout=60,
            )
        assert resp.result.outcome == executor_pb2.OUTCOME_OK
        assert resp.stdout == b"42\n"
    finally:
        assert stop_daemon(proc) == 0


@pytest.mark.parametrize("client", ["no-certificate", "rogue-ca", "plaintext"])
def test_remote_executor_refuses_clients_without_a_trusted_certificate(
    stack: Stack, certs: Path, remote_executor: dict[str, Any], client: str
) -> None:
    ca = (certs / "ca.pem").read_bytes()
    if client == "plaintext":
        channel = grpc.insecure_channel(remote_executor["listen"])
    else:
        key = (certs / "rogue.key").read_bytes() if client == "rogue-ca" else None
        chain = (certs / "rogue.pem").read_bytes() if client == "rogue-ca" else None
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)
        channel = grpc.secure_channel(remote_executor["listen"], creds)
    with channel, pytest.raises(grpc.RpcError) as info:
        # Even with the right token: the TLS handshake comes first.
        executor_pb2_grpc.ExecutorServiceStub(channel).Cancel(
            executor_pb2.CancelRequest(run_id="x"),
            metadata=(("authorization", f"Bearer {stack.executor_token}"),),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.fixture
def mtls_gateway(
    stack: Stack, certs: Path, remote_executor: dict[str, Any], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    config = make_gateway_config(
        tmp_path,
        stack,
        executor=_remote_link(stack, certs, remote_executor, tmp_path),
        tls={
            "cert_file": str(certs / "server.pem"),
            "key_file": str(certs / "server.key"),
            "client_ca_file": str(certs / "ca.pem"),
        },
        agents=[
            {"id": "dev-agent", "profile": "default", "token_sha256": hashlib.sha256(stack.token.encode()).hexdigest()},
            {"id": "cert-agent", "profile": "untrusted", "tls_identity": CERT_AGENT_URI},
        ],
    )
    proc, info = start_daemon("gateway", config, tmp_path)
    yield {**info, "audit": Path(info["audit"])}
    assert stop_daemon(proc) == 0


def _cli(stack: Stack, gateway: str, certs: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airlock.cli", "call", "python", '{"code": "print(1)"}', "--gateway", gateway,
         "--tls-ca", str(certs / "ca.pem"), *extra],
        env={**os.environ, "AIRLOCK_HOME": str(stack.home / "nonexistent")},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_agent_authenticates_with_its_client_certificate(
    stack: Stack, certs: Path, mtls_gateway: dict[str, Any]
) -> None:
    proc = _cli(
        stack,
        mtls_gateway["listen"],
        certs,
        "--tls-cert",
        str(certs / "agent.pem"),
        "--tls-key",
        str(certs / "agent.key"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["principal"] == "cert-agent"
    assert out["stdout"] == "1\n"
    events = [json.loads(line) for line in mtls_gateway["audit"].read_text().splitlines()]
    assert {e["principal"] for e in events if e["kind"] in ("decision", "execution")} == {"cert-agent"}


def test_a_certificate_naming_the_agent_in_its_cn_or_dns_san_is_not_an_identity(
    stack: Stack, certs: Path, mtls_gateway: dict[str, Any]
) -> None:
    proc = _cli(
        stack,
        mtls_gateway["listen"],
        certs,
        "--tls-cert",
        str(certs / "agent-cn.pem"),
        "--tls-key",
        str(certs / "agent-cn.key"),
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["status"] == "UNAUTHENTICATED"


def test_certificate_and_token_of_different_agents_are_refused(
    stack: Stack, certs: Path, mtls_gateway: dict[str, Any]
) -> None:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / "agent.key").read_bytes(),
        certificate_chain=(certs / "agent.pem").read_bytes(),
    )
    with grpc.secure_channel(mtls_gateway["listen"], creds) as channel, pytest.raises(grpc.RpcError) as info:
        gateway_pb2_grpc.GatewayServiceStub(channel).Invoke(
            gateway_pb2.InvokeRequest(call=tool_call("python", '{"code": "print(1)"}')),
            metadata=auth(stack.token),  # dev-agent's token with cert-agent's certificate
            timeout=30,
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "different agents" in decision_from_error(info.value).reasons[0].message


def test_gateway_with_client_ca_refuses_clients_without_a_certificate(
    stack: Stack, certs: Path, mtls_gateway: dict[str, Any]
) -> None:
    proc = _cli(stack, mtls_gateway["listen"], certs, "--token-file", str(stack.token_file))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["status"] == "UNAVAILABLE"
