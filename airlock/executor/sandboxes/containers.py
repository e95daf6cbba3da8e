"""What a long-lived sandbox container is, and how it is checked.

PID 1 of such a container is docker-init (tini: it reaps every orphan, so
a call's leftovers never pile up as zombies); its child is the keeper,
``timeout -s KILL <lifetime> sleep infinity``. Both run as the *keeper*
uid. Every call is a ``docker exec`` as the *sandbox* uid, with the same
hardening (the exec inherits the container's capabilities, seccomp
profile, no-new-privileges and rlimits). Because the keeper has another
uid, nothing a call starts can signal, trace or read it, and one
``kill -9 -1`` run as the sandbox uid ends every process of the call and
nothing else: kill(-1) signals every process of the caller's uid in its PID
namespace but PID 1 and itself, and the kernel makes it atomic against
fork, so no child escapes it. Every exec runs that sweep before the call's
program starts and again when it ended; after a session call the executor
checks that only the keeper is left (and sweeps itself if not).

A desktop sandbox (computer use, docs/computer-use.md) differs only in its
keeper: ``airlock-desktop WxH`` (a virtual display and a kiosk browser, as
the keeper uid) instead of ``sleep infinity``. Its keeper's processes come
and go, so the check after a call is "no process of the sandbox uid is left"
(UID_COUNT_ARGV), and its class carries the display's size. Desktops are
never pooled.

A container is handed out only after check() found it as it was made:
running with the same PID 1 and start time, no exec running, the same
configuration (a ``docker update`` or ``pause`` from outside shows), only
the keeper's processes, and built from what would be used now (its
fingerprint: the image's id, the registry entries naming the image, the
seccomp profile and the hardening options). A container is created from
its image's id, resolved once (the pinned digest, for a call that has one),
never from the tag: a retag cannot slip another image in between the
fingerprint and the create, and a pinned call is handed only a container of
its digest (Sandbox.image_id).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from airlock.executor._model import EffectiveLimits
from airlock.executor._options import KEEPER_PIDS

#: Run as the sandbox uid: ends every process of that uid in the container.
SWEEP_ARGV = ("/bin/sh", "-c", "kill -9 -1 2>/dev/null; exit 0")
#: Counts the processes in the container's PID namespace from inside (shell
#: builtins only: the count includes this shell, and nothing else it adds).
#: Under gVisor the engine's process list shows gVisor's host processes, not
#: the sandbox's, so this is the only true list there.
COUNT_ARGV = ("/bin/sh", "-c", "set -- /proc/[0-9]*; echo $#")
#: Every call's exec: the sweep, the call's deadline wrapper and argv ("$@":
#: no shell parses the argv), the sweep again once it ended (so nothing it
#: started keeps the output open or outlives it), then its exit status.
PRELUDE = ("/bin/sh", "-c", 'kill -9 -1 2>/dev/null; "$@"; rc=$?; kill -9 -1 2>/dev/null; exit $rc', "sh")
#: The keeper's command after the lifetime wrapper.
KEEPER_ARGV = ("sleep", "infinity")
#: A desktop sandbox's keeper (deploy/images/desktop/airlock-desktop): Xvfb on
#: DESKTOP_DISPLAY and a kiosk chromium, as the keeper uid; its size follows.
DESKTOP_KEEPER = "airlock-desktop"
DESKTOP_DISPLAY = ":99"
#: Run as the keeper uid: counts the live processes of the uid given as $1
#: (any of its real, effective, saved or filesystem uid), from inside, with
#: shell builtins only. A desktop's keeper has a changing number of processes
#: (Xvfb, chromium and its helpers), so "nothing of the call is left" is
#: "no process of the sandbox uid", not a total. Every thread's status is
#: read (/proc/PID/task/TID/status; not the owner of /proc/PID, which a
#: process that makes itself non-dumpable turns into root's). Zombies (State
#: Z, X) are dead and only wait for docker-init to reap them; a live thread
#: under a zombie leader (the leader called pthread_exit) still counts. The
#: same under runc and gVisor.
UID_COUNT_ARGV = (
    "/bin/sh",
    "-c",
    (
        'n=0; for f in /proc/[0-9]*/task/[0-9]*/status; do z=; { while read -r k a b c d; do case "$k" in '
        'State:) case "$a" in Z|X) z=1;; esac;; '
        'Uid:) [ -z "$z" ] && case " $a $b $c $d " in *" $1 "*) n=$((n+1));; esac; break;; esac; done; } '
        '< "$f" 2>/dev/null; done; echo "$n"'
    ),
    "sh",
)

ReplaceCause = Literal["died", "tampered", "stale", "expired", "evicted", "failed"]
REPLACE_CAUSES: tuple[ReplaceCause, ...] = ("died", "tampered", "stale", "expired", "evicted", "failed")

#: Configuration fields compared at every claim: what `docker update`,
#: `docker pause` or a recreated container would change.
_HOST_FIELDS = (
    "Memory",
    "MemorySwap",
    "MemoryReservation",
    "NanoCpus",
    "CpuQuota",
    "CpuPeriod",
    "CpuShares",
    "CpusetCpus",
    "PidsLimit",
    "BlkioWeight",
    "ReadonlyRootfs",
    "CapAdd",
    "CapDrop",
    "SecurityOpt",
    "Privileged",
    "NetworkMode",
    "Runtime",
    "Init",
    "Ulimits",
    "Tmpfs",
    "Binds",
    "Mounts",
    "Devices",
    "IpcMode",
    "PidMode",
    "UsernsMode",
    "CgroupParent",
    "OomKillDisable",
    "RestartPolicy",
)
_CONFIG_FIELDS = ("User", "Image", "Env", "Entrypoint", "Cmd", "WorkingDir", "Labels")


@dataclass(frozen=True)
class ContainerClass:
    """What is fixed when a container is created and so must match a call
    exactly: never looser (a run is never looser than its decision) and,
    for simplicity, never tighter either. A call's timeout and output cap
    are its own, per exec."""

    image: str
    runtime: str
    memory_bytes: int
    cpu_millis: int
    pids: int
    tmpfs_bytes: int
    desktop: str = ""
    """A desktop sandbox's display, "WIDTHxHEIGHT" ("" for any other): its
    keeper runs the display and a browser instead of sleeping. Never pooled."""

    @classmethod
    def of(cls, image: str, runtime: str, limits: EffectiveLimits, desktop: str = "") -> ContainerClass:
        return cls(image, runtime, limits.memory_bytes, limits.cpu_millis, limits.pids, limits.tmpfs_bytes, desktop)

    @property
    def label(self) -> str:
        """For metrics and logs: image, runtime and the limits, short (and
        the display, for a desktop)."""
        mib = 1 << 20
        return (
            f"{self.image}|{self.runtime}|{self.memory_bytes // mib}Mi|{self.cpu_millis}m"
            f"|{self.pids}p|{self.tmpfs_bytes // mib}Mi"
        ) + (f"|desktop={self.desktop}" if self.desktop else "")

    @property
    def keeper_argv(self) -> tuple[str, ...]:
        """The keeper's command after the lifetime wrapper."""
        return (DESKTOP_KEEPER, self.desktop) if self.desktop else KEEPER_ARGV

    def limits(self, ceilings: EffectiveLimits, timeout_ms: int) -> EffectiveLimits:
        """The container's limits: the class's, with timeout_ms for its keeper."""
        return EffectiveLimits(
            memory_bytes=self.memory_bytes,
            cpu_millis=self.cpu_millis,
            pids=self.pids,
            timeout_ms=timeout_ms,
            output_bytes=ceilings.output_bytes,
            tmpfs_bytes=self.tmpfs_bytes,
            nofile=ceilings.nofile,
        )


def new_sandbox_id() -> str:
    return f"sbx-{secrets.token_hex(8)}"


@dataclass
class Sandbox:
    """One started long-lived container, as it was when it was made."""

    sandbox_id: str
    container_id: str
    cls: ContainerClass
    fingerprint: str
    pid: int
    started_at: str
    config_digest: str
    created: float
    """time.monotonic() at start."""
    created_unix: float = field(default_factory=time.time)
    egress_address: str = ""
    """Its fixed address on the egress network ("" without egress)."""
    image_id: str = ""
    """The engine id it was created from (not the tag; its inspect's
    ``Image``, which config_digest covers): what a pinned call compares
    with its RunSpec.image_digest before using it."""


def config_digest(inspect: Mapping[str, Any]) -> str:
    host = inspect.get("HostConfig") or {}
    config = inspect.get("Config") or {}
    picked = {
        "host": {k: host.get(k) for k in _HOST_FIELDS},
        "config": {k: config.get(k) for k in _CONFIG_FIELDS},
        "image": inspect.get("Image"),
    }
    return hashlib.sha256(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()


def check(  # noqa: PLR0911 - one return per cause reads best
    sandbox: Sandbox,
    inspect: Mapping[str, Any] | None,
    fingerprint: str,
    pids: int | None,
) -> ReplaceCause | None:
    """Why this container must not be handed out, or None. ``pids`` is the
    container's process count if it can be read (runc's pids cgroup; gVisor
    counts its own threads there), for an idle container only."""
    if inspect is None:
        return "died"
    state = inspect.get("State") or {}
    if not state.get("Running") or state.get("Restarting") or inspect.get("RestartCount"):
        return "died"
    if state.get("Pid") != sandbox.pid or state.get("StartedAt") != sandbox.started_at:
        return "died"
    if state.get("Paused") or inspect.get("ExecIDs"):
        return "tampered"
    if config_digest(inspect) != sandbox.config_digest:
        return "tampered"
    if pids is not None and pids != KEEPER_PIDS:
        return "tampered"
    if fingerprint != sandbox.fingerprint:
        return "stale"
    return None


def exec_argv(wrapper: list[str], argv: tuple[str, ...]) -> list[str]:
    """A call's exec: the sweep prelude, the deadline wrapper, the argv."""
    return [*PRELUDE, *wrapper, *argv]


class Fingerprints:
    """What a container of a class is built from, as one digest: the image's
    id (a re-tagged image changes it), the registry entries that name the
    image, and the hardening (the seccomp profile and the container options
    the executor makes, passed in as one digest)."""

    def __init__(self, image_id: Callable[[str], str], registry_digest: Callable[[str], str], hardening: str) -> None:
        self._image_id = image_id
        self._registry_digest = registry_digest
        self._hardening = hardening

    def of(self, cls: ContainerClass, image_id: str = "") -> str:
        """Blocking: asks the engine for the image's id, unless given the id
        a container is being created from (the same id for both, so a retag
        in between cannot make a container and its fingerprint disagree)."""
        image_id = image_id or self._image_id(cls.image)
        parts = [image_id, self._registry_digest(cls.image), self._hardening, cls.label]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
