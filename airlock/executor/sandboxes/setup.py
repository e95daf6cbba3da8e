"""Process wiring of the warm pool and the session table: made from
executor.yaml, prewarmed from the registry, kept up by background tasks,
ended at shutdown. Called by airlock/executor/_main.py."""

from __future__ import annotations

import asyncio
from typing import Any

from airlock.common import parse_duration_ms, parse_size
from airlock.common.wire import Limits
from airlock.executor._config import ExecutorConfig
from airlock.executor._docker import DockerRuntime
from airlock.executor._images import ImageAllowlist
from airlock.executor._metrics import ExecutorMetrics
from airlock.executor._model import EffectiveLimits, RunSpec
from airlock.executor._options import ceilings, clamp, load_seccomp_profile
from airlock.executor._runner import Sandboxes
from airlock.executor.egress import Egress
from airlock.executor.sandboxes.containers import ContainerClass
from airlock.executor.sandboxes.events import SessionEvents
from airlock.executor.sandboxes.factory import DockerSandboxes
from airlock.executor.sandboxes.pool import PoolLimits, WarmPool
from airlock.executor.sandboxes.sessions import SessionLimits, SessionTable


def build(
    cfg: ExecutorConfig,
    *,
    runtime: DockerRuntime,
    metrics: ExecutorMetrics,
    egress: Egress,
    images: ImageAllowlist,
    events: SessionEvents,
    generation: str = "",
) -> Sandboxes:
    """The warm pool and the session table, as configured, and the factory
    that makes a container for one call with /inputs or /outputs."""
    settings = cfg.sessions
    factory = DockerSandboxes(
        runtime,
        cfg,
        seccomp_profile=load_seccomp_profile(cfg),
        ceilings=ceilings(cfg),
        registry_digest=images.registry_digest,
        lifetime_ms=parse_duration_ms(settings.max_max_lifetime),
        egress=egress.attachment,
        generation=generation,
    )
    pool = None
    if cfg.pool.enabled:
        limits = PoolLimits(
            size=cfg.pool.size,
            max_classes=cfg.pool.max_classes,
            max_starting=cfg.pool.max_starting,
            max_idle_s=parse_duration_ms(cfg.pool.max_idle) / 1000,
            class_ttl_s=parse_duration_ms(cfg.pool.class_ttl) / 1000,
            check_interval_s=parse_duration_ms(cfg.pool.check_interval) / 1000,
        )
        pool = WarmPool(limits, factory, metrics)
    sessions = None
    if settings.enabled:
        table_limits = SessionLimits(
            max_sessions=settings.max_sessions,
            max_per_principal=settings.max_per_principal,
            check_interval_s=parse_duration_ms(settings.check_interval) / 1000,
        )
        sessions = SessionTable(table_limits, factory, events, metrics, pool=pool, addresses=egress)
    return Sandboxes(
        runtime=runtime,
        sweeper=factory,
        pool=pool,
        sessions=sessions,
        idle_ttl_ms=parse_duration_ms(settings.idle_ttl),
        max_lifetime_ms=parse_duration_ms(settings.max_lifetime),
        max_idle_ttl_ms=parse_duration_ms(settings.max_idle_ttl),
        max_max_lifetime_ms=parse_duration_ms(settings.max_max_lifetime),
        factory=factory,
    )


def start(cfg: ExecutorConfig, boxes: Sandboxes | None, images: ImageAllowlist) -> list[asyncio.Task[None]]:
    """The pool's refill loop (after prewarming the registry's classes) and
    the session table's upkeep."""
    tasks: list[asyncio.Task[None]] = []
    if boxes is None:
        return tasks
    if boxes.pool is not None:
        if cfg.pool.prewarm:
            for cls in warm_classes(images.warm_classes(), ceilings(cfg), cfg.runtimes):
                boxes.pool.want(cls)
        tasks.append(asyncio.create_task(boxes.pool.run()))
    if boxes.sessions is not None:
        tasks.append(asyncio.create_task(boxes.sessions.run()))
    return tasks


def warm_classes(
    entries: list[dict[str, Any]], top: EffectiveLimits, runtimes: tuple[str, ...]
) -> list[ContainerClass]:
    """The container classes the registry's network-less tools get when a
    decision does not tighten them: their own limits (or the ceilings),
    clamped to the ceilings. A guess that is right for the shipped profiles;
    any other class is learnt on first use."""
    found: list[ContainerClass] = []
    for entry in entries:
        if entry["runtime"] not in runtimes:
            continue
        raw = entry["limits"]
        try:
            asked = Limits(
                memory_bytes=parse_size(raw.get("memory", 0)),
                cpu_millis=round(float(raw.get("cpus", 0)) * 1000),
                pids=int(raw.get("pids", 0)),
                tmpfs_bytes=parse_size(raw.get("tmpfs", 0)),
            )
        except (TypeError, ValueError):
            continue
        spec = RunSpec(run_id="warm", tool="", image=entry["image"], argv=("true",), limits=asked)
        cls = ContainerClass.of(entry["image"], entry["runtime"], clamp(spec, top))
        if cls not in found:
            found.append(cls)
    return found


async def stop(boxes: Sandboxes | None, upkeep: list[asyncio.Task[None]], events: SessionEvents) -> None:
    """Ends every session (cause shutdown) and empties the pool; gives the
    gateway's stream a moment to take the ended events."""
    for task in upkeep:
        task.cancel()
    await asyncio.gather(*upkeep, return_exceptions=True)
    if boxes is None:
        return
    if boxes.sessions is not None:
        await boxes.sessions.close()
    if boxes.pool is not None:
        await boxes.pool.close()
    for _ in range(40):
        if not events.pending:
            break
        await asyncio.sleep(0.05)
    events.stop_consumers()
