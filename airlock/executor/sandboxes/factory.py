"""Starts, inspects and removes long-lived sandbox containers on the
container runtime. Blocking; the pool and the session table call it from
worker threads. The options come from the one function that makes
container options (airlock/executor/_options.py), in its keeper form."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from airlock.executor._config import ExecutorConfig
from airlock.executor._model import EffectiveLimits, RunSpec
from airlock.executor._options import EgressAttachment, Keeper, container_options
from airlock.executor.sandboxes.containers import (
    COUNT_ARGV,
    SWEEP_ARGV,
    UID_COUNT_ARGV,
    ContainerClass,
    Fingerprints,
    Sandbox,
    config_digest,
    new_sandbox_id,
)


class KeeperRuntime(Protocol):
    def create(self, options: dict[str, Any]) -> str: ...
    def start(self, container_id: str) -> None: ...
    def remove(self, container_id: str) -> None: ...
    def inspect(self, container_id: str) -> Mapping[str, Any] | None: ...
    def image_id(self, image: str) -> str: ...
    def pids_current(self, container_id: str) -> int | None: ...
    def process_count(self, container_id: str) -> int: ...
    def exec_quiet(self, container_id: str, argv: tuple[str, ...], user: str, timeout_s: float) -> int: ...
    def exec_read(self, container_id: str, argv: tuple[str, ...], user: str, timeout_s: float) -> tuple[int, bytes]: ...


#: How long counting processes from inside (gVisor) may take.
COUNT_TIMEOUT_S = 5.0


class DockerSandboxes:
    def __init__(
        self,
        runtime: KeeperRuntime,
        cfg: ExecutorConfig,
        *,
        seccomp_profile: str,
        ceilings: EffectiveLimits,
        registry_digest: Callable[[str], str],
        lifetime_ms: int,
        egress: Callable[[str], EgressAttachment] | None = None,
        generation: str = "",
    ) -> None:
        self._generation = generation
        self._runtime = runtime
        self._cfg = cfg
        self._seccomp = seccomp_profile
        self._ceilings = ceilings
        self._lifetime_ms = lifetime_ms
        self._egress = egress
        self._fingerprints = Fingerprints(runtime.image_id, registry_digest, self._hardening())

    def _hardening(self) -> str:
        """The options a container of a reference class gets, minus what
        differs per container: any change to the hardening (or to the seccomp
        profile, which is part of the options) changes the digest."""
        cls = ContainerClass("reference", "runc", 1 << 28, 1000, 64, 1 << 26)
        options = self._options(cls, "reference", "pool", "", None)
        for key in ("name", "labels", "image"):
            options.pop(key, None)
        return hashlib.sha256(json.dumps(options, sort_keys=True, default=repr).encode()).hexdigest()

    def _options(  # noqa: PLR0917 - what one container is made from
        self,
        cls: ContainerClass,
        sandbox_id: str,
        kind: str,
        fingerprint: str,
        egress: EgressAttachment | None,
        lifetime_ms: int | None = None,
        image_id: str = "",
    ) -> dict[str, Any]:
        limits = cls.limits(self._ceilings, lifetime_ms or self._lifetime_ms)
        # image_digest: container_options creates from the id, not the tag.
        spec = RunSpec(
            run_id=sandbox_id,
            tool="",
            image=cls.image,
            image_digest=image_id,
            argv=cls.keeper_argv,
            runtime=cls.runtime,
        )
        keeper = Keeper(
            sandbox_id=sandbox_id,
            kind=kind,
            fingerprint=fingerprint,
            pool=cls.label,
            generation=self._generation,
            desktop=bool(cls.desktop),
        )
        return container_options(spec, limits, self._cfg, self._seccomp, egress, keeper=keeper)

    def fingerprint(self, cls: ContainerClass) -> str:
        return self._fingerprints.of(cls)

    def start(
        self,
        cls: ContainerClass,
        kind: str,
        *,
        egress_address: str = "",
        lifetime_ms: int | None = None,
        image_id: str = "",
    ) -> Sandbox:
        """Starts one (kind "pool", "session", or "call": made for one call
        that needs /inputs or /outputs and removed after it, living at most
        ``lifetime_ms``), from ``image_id`` (a pinned call's digest) or else
        from the id the class's tag names now, resolved once: the container
        and its fingerprint are of the same image whatever a retag does."""
        sandbox_id = new_sandbox_id()
        image_id = image_id or self._runtime.image_id(cls.image)
        fingerprint = self._fingerprints.of(cls, image_id)
        attachment = None
        if egress_address:
            if self._egress is None:
                raise RuntimeError("no egress network to attach to")
            attachment = self._egress(egress_address)
        options = self._options(cls, sandbox_id, kind, fingerprint, attachment, lifetime_ms, image_id)
        container_id = self._runtime.create(options)
        try:
            self._runtime.start(container_id)
            inspect = self._runtime.inspect(container_id)
        except BaseException:
            self._runtime.remove(container_id)
            raise
        state = (inspect or {}).get("State") or {}
        if inspect is None or not state.get("Running"):
            self._runtime.remove(container_id)
            raise RuntimeError(f"sandbox container {container_id[:12]} did not stay running")
        if inspect.get("Image") != image_id:
            # The engine made it from something else than asked: never used.
            self._runtime.remove(container_id)
            found = inspect.get("Image")
            raise RuntimeError(f"sandbox container {container_id[:12]} is of image {found}, not {image_id}")
        return Sandbox(
            sandbox_id=sandbox_id,
            container_id=container_id,
            cls=cls,
            fingerprint=fingerprint,
            pid=int(state.get("Pid") or 0),
            started_at=str(state.get("StartedAt") or ""),
            config_digest=config_digest(inspect),
            created=time.monotonic(),
            egress_address=egress_address,
            image_id=image_id,
        )

    def inspect(self, container_id: str) -> Mapping[str, Any] | None:
        return self._runtime.inspect(container_id)

    def pids(self, sandbox: Sandbox) -> int | None:
        # Under gVisor the cgroup holds gVisor's own threads: not comparable.
        return self._runtime.pids_current(sandbox.container_id) if sandbox.cls.runtime == "runc" else None

    def processes(self, sandbox: Sandbox) -> int | None:
        if sandbox.cls.runtime == "runc":
            return self._runtime.process_count(sandbox.container_id)
        # Counted as the keeper's uid, which a call cannot signal or fake.
        code, out = self._runtime.exec_read(sandbox.container_id, COUNT_ARGV, self._cfg.keeper_user, COUNT_TIMEOUT_S)
        text = out.decode("ascii", "replace").strip()
        if code != 0 or not text.isdigit():
            # Not a container to trust: the caller replaces it.
            raise RuntimeError(f"counting processes in {sandbox.container_id[:12]} failed (exit {code})")
        return int(text) - 1  # the counting shell itself

    def user_processes(self, sandbox: Sandbox) -> int:
        """Live processes of the sandbox uid in the container, counted from
        inside as the keeper's uid (which a call cannot signal, trace or
        fake): what a desktop's check after a call looks at, under runc and
        gVisor alike. Raises RuntimeError when the count cannot be had."""
        uid = self._cfg.user.partition(":")[0]
        code, out = self._runtime.exec_read(
            sandbox.container_id, (*UID_COUNT_ARGV, uid), self._cfg.keeper_user, COUNT_TIMEOUT_S
        )
        text = out.decode("ascii", "replace").strip()
        if code != 0 or not text.isdigit():
            raise RuntimeError(f"counting processes in {sandbox.container_id[:12]} failed (exit {code})")
        return int(text)

    def remove(self, container_id: str) -> None:
        self._runtime.remove(container_id)

    def sweep(self, sandbox: Sandbox, timeout_s: float) -> int:
        """Ends every process of the sandbox uid in the container; returns
        the sweep's exit code (0 when it ran)."""
        return self._runtime.exec_quiet(sandbox.container_id, SWEEP_ARGV, self._cfg.user, timeout_s)
