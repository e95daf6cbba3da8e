"""The one place container options are made. It starts from the hardened
defaults; a run spec can only tighten the limits (see clamp). The seccomp
profile is read once, by the Runner, with load_seccomp_profile."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from docker.types import Mount, Ulimit

from airlock.common import ConfigError, parse_duration_ms, parse_size
from airlock.common.wire import LIMIT_KEYS
from airlock.executor._config import ExecutorConfig
from airlock.executor._model import EffectiveLimits, RunSpec

MANAGED_LABEL = "airlock.managed"
#: Which executor made a container: several executors may share one Docker
#: engine, and each removes only its own leftovers at startup.
INSTANCE_LABEL = "airlock.executor"
#: Under gVisor the container's cgroup holds gVisor's own kernel (the Go
#: sentry and gofer threads), not the sandboxed processes; it will not start
#: below about 40 pids. The sandboxed program's processes are gVisor's to
#: count, so the cgroup limit gets this headroom on top of the run's own.
RUNSC_PIDS_OVERHEAD = 64
WORKDIR = "/work"
#: Where a call's input files are, read-only, and where it leaves files to
#: collect (long-lived containers only; airlock/executor/_artifacts.py).
INPUTS_DIR = "/inputs"
OUTPUTS_DIR = "/outputs"
#: /inputs holds the most input bytes plus this (the filesystem's overhead).
INPUTS_SLACK_BYTES = 1 << 20
#: The profile shipped as package data (deploy/seccomp/airlock.json in the
#: source tree, written by deploy/seccomp/generate.py).
DEFAULT_SECCOMP_PROFILE = Path(str(resources.files("airlock.deploy") / "seccomp" / "airlock.json"))
#: Headroom in the nproc ulimit for processes of the sandbox uid outside any sandbox.
NPROC_SLACK = 64
#: Default actions that would let an unlisted syscall through.
_PERMISSIVE_ACTIONS = {"SCMP_ACT_ALLOW", "SCMP_ACT_LOG"}
#: PID 1 of every sandbox, ahead of the tool's argv: GNU coreutils timeout
#: (in every image we build), which SIGKILLs the tool's process group at the
#: deadline and then exits, and with PID 1 gone the kernel kills everything
#: left in the container's PID namespace. So a sandbox ends on time even
#: when the executor is dead (SIGKILLed, OOM-killed) and cannot kill it.
#: Under runc the sandboxed code cannot stop it either: the kernel drops
#: signals sent to a namespace's init from inside unless init handles them,
#: and SIGKILL/SIGSTOP are never delivered that way; the ones timeout does
#: handle (TERM, INT, HUP, ALRM, ...) only make it end the run early.
#: Two ways round it exist, which is why the reaper (airlock/executor/_reaper.py)
#: backs it up: gVisor delivers any signal to init (SIGSTOP freezes it),
#: and under runc a same-uid process can write /proc/1/mem.
DEADLINE_WRAPPER = "/usr/bin/timeout"
#: The wrapper fires this long after the run's timeout, so that the
#: executor's own kill (which reports "timeout") normally comes first.
WRAPPER_GRACE_MS = 2000
#: The wrapper is one more process in the pids cgroup; the tool keeps its own.
WRAPPER_PIDS = 1
#: The one deadline of a run: creating, running, waiting for and removing
#: its container all end within its timeout plus this (Docker calls on a
#: loaded host, a slow gVisor start).
RUN_GRACE_S = 20
#: Unix time after which the reaper removes the container, whatever the
#: executor is doing: its create time plus the timeout plus RUN_GRACE_S.
REAP_AT_LABEL = "airlock.reap_at"


def load_seccomp_profile(cfg: ExecutorConfig) -> str:
    """The profile's JSON text, compacted, for security_opt "seccomp=...".

    Docker wants the profile's content, not a path. A profile that is missing,
    not JSON, or allows unlisted syscalls by default is a config error: the
    executor refuses to start rather than run sandboxes under less.
    """
    path = Path(cfg.seccomp_profile) if cfg.seccomp_profile else DEFAULT_SECCOMP_PROFILE
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), "seccomp_profile", f"cannot read: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), "seccomp_profile", f"not valid JSON: {exc}") from exc
    if not isinstance(profile, dict) or not isinstance(profile.get("syscalls"), list):
        raise ConfigError(str(path), "seccomp_profile", "expected a seccomp profile with a syscalls list")
    if profile.get("defaultAction") in _PERMISSIVE_ACTIONS or "defaultAction" not in profile:
        raise ConfigError(str(path), "seccomp_profile", "defaultAction must deny (an allowlist profile)")
    return json.dumps(profile, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Keeper:
    """Makes container_options produce a long-lived sandbox container (a warm
    pool or session container; airlock/executor/sandboxes) instead of a
    one-shot run: PID 1 is docker-init, whose child is the keeper (the
    deadline wrapper around ``sleep infinity``, with the container's lifetime
    as its deadline), both as the keeper uid; calls are ``docker exec``s as
    the sandbox uid. The call's environment is given per exec, never here."""

    sandbox_id: str
    kind: str
    """"pool" or "session"."""
    fingerprint: str
    pool: str
    """The container class's label."""
    generation: str = ""
    """Which start of the executor made it: its reaper removes exactly these once the executor is gone."""
    desktop: bool = False
    """A desktop sandbox: its keeper runs a display and a browser (DESKTOP_KEEPER_PIDS)."""


#: Labels of long-lived sandbox containers.
SANDBOX_LABEL = "airlock.sandbox"
KIND_LABEL = "airlock.kind"
FINGERPRINT_LABEL = "airlock.fingerprint"
POOL_LABEL = "airlock.pool"
GENERATION_LABEL = "airlock.generation"
#: The keeper's processes in the pids cgroup (docker-init, timeout, sleep).
KEEPER_PIDS = 3
#: A desktop keeper's tasks (the pids cgroup counts threads): Xvfb, the
#: keeper's python and chromium's processes with their threads, about 150 on
#: the test page, with room for heavier pages. On top of the call's own pids,
#: so a call gets what its decision says whatever the browser uses; a browser
#: that needs more than this fails to start tabs, and the calls see it.
DESKTOP_KEEPER_PIDS = 384


#: Where a sandbox granted egress finds its trust bundle (read-only).
TRUST_MOUNT = "/etc/airlock/egress-trust.pem"


class EgressAttachment(NamedTuple):
    """How a run granted egress is wired: network, proxy environment, DNS
    server, and the sandbox's own address on the network."""

    network: str
    env: dict[str, str]
    dns: str
    address: str
    #: The proxy's host:port, without a credential: a desktop's browser is
    #: pointed at it and its calls' grants are found by ``address``.
    proxy: str = ""
    #: The host file of the trust bundle (the system's CAs and the egress
    #: CA) mounted read-only at TRUST_PATH; "" when there is none.
    trust_bundle: str = ""


def executor_instance(cfg: ExecutorConfig) -> str:
    """A stable id for this executor: a digest of its configured instance
    name, else of the address it serves on (two executors of one host cannot
    serve on the same socket or port at once)."""
    name = f"instance:{cfg.instance}" if cfg.instance is not None else (cfg.socket or cfg.listen or "")
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def ceilings(cfg: ExecutorConfig) -> EffectiveLimits:
    c = cfg.limits
    return EffectiveLimits(
        memory_bytes=parse_size(c.memory),
        cpu_millis=round(c.cpus * 1000),
        pids=c.pids,
        timeout_ms=parse_duration_ms(c.timeout),
        output_bytes=parse_size(c.output),
        tmpfs_bytes=parse_size(c.tmpfs),
        nofile=c.nofile,
    )


def clamp(spec: RunSpec, top: EffectiveLimits) -> EffectiveLimits:
    """Each limit is the spec's value if set and lower, else the ceiling."""
    asked = spec.limits
    picked = {
        key: min(getattr(asked, key), getattr(top, key)) if getattr(asked, key) > 0 else getattr(top, key)
        for key in LIMIT_KEYS
    }
    return EffectiveLimits(**picked, nofile=top.nofile)


def reap_at(limits: EffectiveLimits, now: float | None = None) -> int:
    """The REAP_AT_LABEL value for a container created ``now``."""
    start = time.time() if now is None else now
    return int(start + limits.timeout_ms / 1000 + RUN_GRACE_S) + 1


def deadline_entrypoint(limits: EffectiveLimits) -> list[str]:
    """The deadline wrapper with its deadline; the tool's argv follows it
    untouched (timeout stops reading options at the duration)."""
    ms = limits.timeout_ms + WRAPPER_GRACE_MS
    return [DEADLINE_WRAPPER, "-s", "KILL", f"{ms // 1000}.{ms % 1000:03d}s"]


def container_options(
    spec: RunSpec,
    limits: EffectiveLimits,
    cfg: ExecutorConfig,
    seccomp_profile: str,
    egress: EgressAttachment | None = None,
    *,
    reap_deadline: int | None = None,
    keeper: Keeper | None = None,
) -> dict[str, Any]:
    """Keyword arguments for docker's containers.create; seccomp_profile is
    the JSON text from load_seccomp_profile. egress, for a run granted it, is
    the internal network's name, the sandbox's fixed address on it and the
    proxy environment. reap_deadline defaults to reap_at(limits). With
    keeper, a long-lived sandbox container (see Keeper): limits.timeout_ms
    is then its lifetime."""
    tmpfs = limits.tmpfs_bytes
    uid, _, gid = cfg.user.partition(":")
    # RLIMIT_NPROC counts every process of the uid host-wide, and all
    # sandboxes share one uid: sized per run it would let one busy sandbox
    # make fork (and even exec after setuid) fail in the others. So it covers
    # every concurrent run at its ceiling plus slack, as a backstop; the
    # cgroup pids limit stays the per-container fork-bomb stop.
    nproc = (cfg.limits.pids + WRAPPER_PIDS) * cfg.max_concurrent_runs + NPROC_SLACK
    network: dict[str, Any] = (
        {
            # A fixed address, known before the container starts: the proxy
            # accepts this call's credential from it alone.
            "network": egress.network,
            "networking_config": {egress.network: {"IPAMConfig": {"IPv4Address": egress.address}}},
        }
        if egress
        else {"network_mode": "none"}
    )
    labels = {
        MANAGED_LABEL: "true",
        INSTANCE_LABEL: executor_instance(cfg),
        "airlock.run_id": spec.run_id,
        "airlock.tool": spec.tool,
        REAP_AT_LABEL: str(reap_at(limits) if reap_deadline is None else reap_deadline),
    }
    lifelong: dict[str, Any] = {}
    tmpfs_mounts = {
        # noexec on /tmp: no shipped tool needs to run files from there.
        "/tmp": f"rw,nosuid,nodev,noexec,size={tmpfs},mode=1777",  # noqa: S108 - the sandbox's own /tmp
        # Docker mounts a tmpfs noexec unless told otherwise, and we keep
        # it so: a tool runs what it wrote through an interpreter
        # (python3 file.py, sh file.sh), never as a binary.
        WORKDIR: f"rw,nosuid,nodev,size={tmpfs},uid={uid},gid={gid},mode=0700",
    }
    if keeper is not None:
        # Files in and out of a call (airlock/executor/_artifacts.py): the
        # keeper's /inputs, which a call reads but cannot change, and the
        # call's /outputs. Tmpfs only: no host path is ever mounted.
        kuid, _, kgid = cfg.keeper_user.partition(":")
        tmpfs_mounts[INPUTS_DIR] = (
            f"rw,nosuid,nodev,noexec,size={parse_size(cfg.artifacts.max_input_bytes) + INPUTS_SLACK_BYTES},"
            f"uid={kuid},gid={kgid},mode=0555"
        )
        tmpfs_mounts[OUTPUTS_DIR] = f"rw,nosuid,nodev,noexec,size={tmpfs},uid={uid},gid={gid},mode=0700"
        labels.update(
            {
                SANDBOX_LABEL: keeper.sandbox_id,
                KIND_LABEL: keeper.kind,
                FINGERPRINT_LABEL: keeper.fingerprint,
                POOL_LABEL: keeper.pool,
                GENERATION_LABEL: keeper.generation,
            }
        )
        lifelong = {
            # tini reaps every orphan a call leaves; the keeper and it run as
            # a uid the calls' processes cannot signal or trace.
            "init": True,
            "user": cfg.keeper_user,
            "name": f"airlock-{keeper.sandbox_id}",
            # Only a desktop's keeper gets anything: where its browser's
            # proxy is, when the session was granted egress.
            "environment": (
                {"AIRLOCK_DESKTOP_PROXY": f"http://{egress.proxy}"}
                if keeper.desktop and egress and egress.proxy
                else {}
            ),
            "pids_limit": limits.pids
            + (DESKTOP_KEEPER_PIDS if keeper.desktop else KEEPER_PIDS)
            + WRAPPER_PIDS
            + (RUNSC_PIDS_OVERHEAD if spec.runtime == "runsc" else 0),
        }
    return {
        # A pinned run's container is made from the id the policy decided
        # with, not the tag: a retag between the executor's check and this
        # create cannot swap the image (docs/images.md).
        "image": spec.image_digest or spec.image,
        # Set explicitly, so an image's own ENTRYPOINT never runs in front of
        # (or takes as its arguments) the tool's argv: what runs is exactly
        # argv, behind the deadline wrapper.
        "entrypoint": deadline_entrypoint(limits),
        "command": list(spec.argv),
        "name": f"airlock-{spec.run_id}",
        "labels": labels,
        "user": cfg.user,
        # The proxy settings come last so a registry env cannot override them.
        "environment": {**spec.env, **(egress.env if egress else {})},
        "working_dir": WORKDIR,
        "hostname": "sandbox",
        # No network, or the internal egress network whose only exit is the
        # proxy (the runner has checked the proxy is up).
        **network,
        # Docker's embedded resolver forwards what it cannot answer to these
        # servers. Before Docker 26 it did so from the *host's* namespace when
        # the host's resolver is on loopback (CVE-2024-29018): a DNS tunnel
        # out of an internal network. Naming the bridge address makes it
        # forward from the sandbox's namespace, where the firewall refuses it.
        **({"dns": [egress.dns]} if egress else {}),
        # The trust bundle (the system's CAs plus the executor's egress CA,
        # for inspected hosts), read-only: a public file, the one host path
        # a sandbox ever sees.
        **(
            {"mounts": [Mount(TRUST_MOUNT, egress.trust_bundle, type="bind", read_only=True)]}
            if egress and egress.trust_bundle
            else {}
        ),
        "read_only": True,
        "cap_drop": ["ALL"],
        # Our allowlist profile (deploy/seccomp), stricter than Docker's default.
        "security_opt": ["no-new-privileges:true", f"seccomp={seccomp_profile}"],
        "privileged": False,
        "pids_limit": limits.pids + WRAPPER_PIDS + (RUNSC_PIDS_OVERHEAD if spec.runtime == "runsc" else 0),
        "mem_limit": limits.memory_bytes,
        # memory+swap equal to memory: no swap, so a memory bomb ends in the
        # OOM killer instead of thrashing the host.
        "memswap_limit": limits.memory_bytes,
        "nano_cpus": limits.cpu_millis * 1_000_000,
        "ulimits": [
            Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
            Ulimit(name="fsize", soft=tmpfs, hard=tmpfs),
            Ulimit(name="core", soft=0, hard=0),
            Ulimit(name="nproc", soft=nproc, hard=nproc),
        ],
        "tmpfs": tmpfs_mounts,
        # Output goes straight to us over attach; a log driver would copy a
        # 100 MB flood to the host's disk.
        "log_config": {"type": "none"},
        "runtime": spec.runtime,
        "stdin_open": False,
        "tty": False,
        **lifelong,
    }
