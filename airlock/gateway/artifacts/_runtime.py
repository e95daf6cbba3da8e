"""Builds the artifact store and its operations from gateway.yaml's
``artifacts:`` section (airlock/gateway/_config.py ArtifactsConfig)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from airlock.common import ConfigError
from airlock.common._secrets import read_secret
from airlock.gateway._config import Agent, ArtifactsConfig
from airlock.gateway._metrics import GatewayMetrics
from airlock.gateway._model import Principal
from airlock.gateway._policy import PolicyEngine
from airlock.gateway.artifacts._access import ArtifactAccess
from airlock.gateway.artifacts._model import Quota
from airlock.gateway.artifacts._ops import ArtifactOps, AuditWriter
from airlock.gateway.artifacts._store import ArtifactStore
from airlock.gateway.artifacts.local import LocalStore


def open_store(cfg: ArtifactsConfig) -> ArtifactStore:
    """The configured backend. The local folder (and the S3 backend's spool
    folder) is made 0700: only the gateway's uid can read what is stored."""
    root = Path(cfg.path)
    if cfg.backend == "local":
        return LocalStore(root)
    from airlock.gateway.artifacts.s3 import S3Settings, S3Store  # noqa: PLC0415 - boto3 only when configured

    s3 = cfg.s3
    assert s3 is not None
    creds = _credentials(s3.credentials_file)
    spool = root / "spool"
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.chmod(0o700)
    return S3Store(
        S3Settings(
            endpoint_url=s3.endpoint_url,
            bucket=s3.bucket,
            access_key_id=creds["access_key_id"],
            secret_access_key=creds["secret_access_key"],
            prefix=s3.prefix,
            region=s3.region,
        ),
        spool_dir=str(spool),
    )


def _credentials(path: str) -> dict[str, str]:
    raw: Any = yaml.safe_load(read_secret(path, "artifacts S3 credentials file"))
    keys = ("access_key_id", "secret_access_key")
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) and raw[k] for k in keys):
        raise ConfigError(
            path, "artifacts.s3.credentials_file", "expected a mapping with access_key_id and secret_access_key"
        )
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise ConfigError(path, unknown[0], "unknown key; expected access_key_id, secret_access_key")
    return {k: raw[k] for k in keys}


@dataclass(frozen=True)
class ArtifactRuntime:
    """What the gateway's main holds: the operations (ArtifactService, the
    sweeper), the Invoke path's seam, and the settings they came from."""

    config: ArtifactsConfig
    ops: ArtifactOps
    access: ArtifactAccess


def build_artifacts(
    cfg: ArtifactsConfig,
    *,
    policy: PolicyEngine,
    record: AuditWriter,
    metrics: GatewayMetrics,
    agents: Iterable[Agent] = (),
    store: ArtifactStore | None = None,
) -> ArtifactRuntime:
    quota = Quota(cfg.quota.max_bytes, cfg.quota.max_count, cfg.quota.max_artifact_bytes)
    ops = ArtifactOps(
        store=store if store is not None else open_store(cfg),
        policy=policy,
        record=record,
        metrics=metrics,
        quota=quota,
        decision_path=cfg.decision_path,
    )
    principals = {a.id: Principal(a.id, a.profile, "token", a.roles) for a in agents}
    return ArtifactRuntime(cfg, ops, ArtifactAccess(ops, principals))
