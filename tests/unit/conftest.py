"""Unit tier: pure-Python tests with fakes at the seams (policy engine, audit
sink, executor, container runtime). Nothing here touches the network beyond
loopback servers the tests start themselves, Docker or OPA."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def shipped_registry_path() -> Path:
    return REPO / "deploy" / "tool_registry.yaml"


@pytest.fixture
def prom() -> CollectorRegistry:
    """A fresh metrics registry, so counts from other tests never leak in."""
    return CollectorRegistry()
