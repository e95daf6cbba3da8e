"""Session fixtures for the integration tier: a real `airlock up` stack (real
OPA, real executor on real Docker, real gateway) in a temporary home. Nothing
here is faked; if Docker or OPA is missing the tests fail loudly rather than
skip."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from helpers import Stack, new_home, start_stack, stop_stack

from airlock.cli._paths import find_opa
from airlock.v1 import gateway_pb2_grpc


@pytest.fixture(scope="session")
def opa_bin() -> str:
    opa = find_opa()
    assert opa, "opa is not installed; run scripts/bootstrap"
    return opa


@pytest.fixture(scope="session")
def stack(opa_bin: str) -> Iterator[Stack]:
    s = start_stack(new_home("stack"))
    yield s
    code, out = stop_stack(s)
    assert code == 0, f"airlock up did not stop cleanly ({code}):\n{out}"
    for name, pid in s.info["pids"].items():
        assert not _alive(pid), f"{name} (pid {pid}) still running after airlock up stopped"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def gateway_stub(stack: Stack) -> Iterator[gateway_pb2_grpc.GatewayServiceStub]:
    with grpc.insecure_channel(stack.gateway) as channel:
        yield gateway_pb2_grpc.GatewayServiceStub(channel)
