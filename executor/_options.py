"""The one place container options are made. It starts from the hardened
defaults; a run spec can only tighten the limits (see clamp)."""

from __future__ import annotations

from typing import Any

from docker.types import Ulimit

from airlock import parse_duration_ms, parse_size
from executor._config import ExecutorConfig
from executor._model import Limits, RunSpec

MANAGED_LABEL = "airlock.managed"
WORKDIR = "/work"


def ceilings(cfg: ExecutorConfig) -> Limits:
    c = cfg.limits
    return Limits(
        memory_bytes=parse_size(c.memory),
        cpu_millis=round(c.cpus * 1000),
        pids=c.pids,
        timeout_ms=parse_duration_ms(c.timeout),
        output_bytes=parse_size(c.output),
        tmpfs_bytes=parse_size(c.tmpfs),
        nofile=c.nofile,
    )


def clamp(spec: RunSpec, top: Limits) -> Limits:
    """Each limit is the spec's value if set and lower, else the ceiling."""

    def pick(asked: int, ceiling: int) -> int:
        return min(asked, ceiling) if asked > 0 else ceiling

    return Limits(
        memory_bytes=pick(spec.memory_bytes, top.memory_bytes),
        cpu_millis=pick(spec.cpu_millis, top.cpu_millis),
        pids=pick(spec.pids, top.pids),
        timeout_ms=pick(spec.timeout_ms, top.timeout_ms),
        output_bytes=pick(spec.output_bytes, top.output_bytes),
        tmpfs_bytes=pick(spec.tmpfs_bytes, top.tmpfs_bytes),
        nofile=top.nofile,
    )


def container_options(spec: RunSpec, limits: Limits, cfg: ExecutorConfig) -> dict[str, Any]:
    """Keyword arguments for docker's containers.create."""
    tmpfs = limits.tmpfs_bytes
    uid, _, gid = cfg.user.partition(":")
    return {
        "image": spec.image,
        "command": list(spec.argv),
        "name": f"airlock-{spec.run_id}",
        "labels": {MANAGED_LABEL: "true", "airlock.run_id": spec.run_id, "airlock.tool": spec.tool},
        "user": cfg.user,
        "environment": dict(spec.env),
        "working_dir": WORKDIR,
        "hostname": "sandbox",
        # Egress is refused before we get here; "none" is the only network.
        "network_mode": "none",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        "pids_limit": limits.pids,
        "mem_limit": limits.memory_bytes,
        # memory+swap equal to memory: no swap, so a memory bomb ends in the
        # OOM killer instead of thrashing the host.
        "memswap_limit": limits.memory_bytes,
        "nano_cpus": limits.cpu_millis * 1_000_000,
        "ulimits": [
            Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
            Ulimit(name="fsize", soft=tmpfs, hard=tmpfs),
            Ulimit(name="core", soft=0, hard=0),
        ],
        "tmpfs": {
            # noexec on /tmp: no shipped tool needs to run files from there.
            "/tmp": f"rw,nosuid,nodev,noexec,size={tmpfs},mode=1777",  # noqa: S108 - the sandbox's own /tmp
            # The work dir allows exec so a tool may run what it wrote.
            WORKDIR: f"rw,nosuid,nodev,size={tmpfs},uid={uid},gid={gid},mode=0700",
        },
        # Output goes straight to us over attach; a log driver would copy a
        # 100 MB flood to the host's disk.
        "log_config": {"type": "none"},
        "runtime": spec.runtime,
        "stdin_open": False,
        "tty": False,
    }
