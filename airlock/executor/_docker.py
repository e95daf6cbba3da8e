"""The container runtime seam and its Docker implementation. Everything
here blocks; the runner calls it from worker threads."""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import docker
from docker.errors import APIError, NotFound
from docker.types import IPAMConfig, IPAMPool

from airlock.executor._errors import EgressSetupError
from airlock.executor._options import GENERATION_LABEL, INSTANCE_LABEL, KIND_LABEL, MANAGED_LABEL, REAP_AT_LABEL
from airlock.executor.egress.network import EgressNetwork

#: On the egress network: the subnet it was made with (it is configured
#: explicitly, so that sandboxes can be given fixed addresses).
SUBNET_LABEL = "airlock.egress.subnet"
#: Every Docker API call but the attach stream (which lasts as long as the
#: container) gives up after this long instead of hanging a run.
DOCKER_CALL_TIMEOUT_S = 60
#: What exec_read keeps of an exec's stdout (a count or a short status).
EXEC_READ_MAX = 4096


class ContainerRuntime(Protocol):
    def create(self, options: dict[str, Any]) -> str: ...
    def attach(self, container_id: str) -> Iterator[tuple[bytes | None, bytes | None]]: ...
    def start(self, container_id: str) -> None: ...
    def kill(self, container_id: str) -> None: ...
    def wait(self, container_id: str, timeout_s: float) -> tuple[int, bool]: ...
    def remove(self, container_id: str) -> None: ...
    def list_managed(self, instance: str) -> list[str]: ...
    def image_id(self, image: str) -> str: ...


class ExecRuntime(Protocol):
    """What a call in a long-lived sandbox container needs (docker exec)."""

    def exec_create(self, container_id: str, argv: list[str], user: str, env: dict[str, str], workdir: str) -> str: ...
    def exec_start(self, exec_id: str) -> Iterator[tuple[bytes | None, bytes | None]]: ...
    def exec_exit_code(self, exec_id: str, timeout_s: float) -> int | None: ...
    def exec_quiet(self, container_id: str, argv: tuple[str, ...], user: str, timeout_s: float) -> int: ...
    def oom_kills(self, container_id: str) -> int | None: ...
    def inspect(self, container_id: str) -> dict[str, Any] | None: ...
    def exec_socket(
        self, container_id: str, argv: list[str], user: str, *, stdin: bool, timeout_s: float
    ) -> tuple[str, socket.socket, object]: ...


@dataclass(frozen=True)
class Managed:
    """One of an executor's containers, as the reaper sees it."""

    container_id: str
    running: bool
    reap_at: float | None
    """Unix time past which it must not exist (its REAP_AT_LABEL), if it has one."""
    kind: str = ""
    """"pool" or "session" for a long-lived sandbox container; "" for a one-shot run's."""
    generation: str = ""
    """Which start of the executor made it (GENERATION_LABEL)."""


class DockerRuntime:
    def __init__(self, base_url: str, max_pool_size: int) -> None:
        # One pooled connection per concurrent run (attach holds one) plus
        # headroom for create/start/wait/remove calls.
        self._client = docker.DockerClient(
            base_url=base_url, version="auto", max_pool_size=max_pool_size * 2 + 4, timeout=DOCKER_CALL_TIMEOUT_S
        )

    def ping(self) -> None:
        self._client.ping()

    def available_runtimes(self) -> set[str]:
        """Runtimes the engine has registered (runc, and runsc once gVisor is set up)."""
        return set(self._client.info().get("Runtimes", {}))

    def create(self, options: dict[str, Any]) -> str:
        container = self._client.containers.create(**options)
        return str(container.id)

    def attach(self, container_id: str) -> Iterator[tuple[bytes | None, bytes | None]]:
        # Attached before start so not a byte is missed; demuxed so stderr
        # stays stderr.
        stream: Iterator[tuple[bytes | None, bytes | None]] = self._client.api.attach(
            container_id, stdout=True, stderr=True, stream=True, logs=False, demux=True
        )
        return stream

    def start(self, container_id: str) -> None:
        self._client.api.start(container_id)

    def kill(self, container_id: str) -> None:
        # Already gone or already stopped: either way the goal is reached.
        with contextlib.suppress(NotFound, APIError):
            self._client.api.kill(container_id)

    def wait(self, container_id: str, timeout_s: float) -> tuple[int, bool]:
        """Exit code and whether the kernel OOM-killed it. docker-py's wait
        has no timeout unless given one: a wedged engine would hang the run."""
        status = self._client.api.wait(container_id, timeout=max(timeout_s, 1.0))
        state = self._client.api.inspect_container(container_id)["State"]
        return int(status.get("StatusCode", -1)), bool(state.get("OOMKilled"))

    def remove(self, container_id: str) -> None:
        try:
            self._client.api.remove_container(container_id, force=True)
        except NotFound:
            pass
        except APIError as exc:
            # Another remover (the reaper, a concurrent clean-up) got there
            # first: the goal is reached.
            if exc.status_code != 409 or "already in progress" not in str(exc):  # noqa: PLR2004 - HTTP Conflict
                raise

    def list_managed(self, instance: str) -> list[str]:
        """This executor's containers (by label), running or not."""
        return [m.container_id for m in self.managed(instance)]

    def managed(self, instance: str) -> list[Managed]:
        """This executor's containers with their state and reaping deadline."""
        labels = [f"{MANAGED_LABEL}=true", f"{INSTANCE_LABEL}={instance}"]
        found = self._client.api.containers(all=True, filters={"label": labels})
        out = []
        for c in found:
            raw = (c.get("Labels") or {}).get(REAP_AT_LABEL, "")
            reap_at = float(raw) if raw.isdigit() else None
            labels_ = c.get("Labels") or {}
            out.append(
                Managed(
                    str(c["Id"]),
                    c.get("State") == "running",
                    reap_at,
                    kind=labels_.get(KIND_LABEL, ""),
                    generation=labels_.get(GENERATION_LABEL, ""),
                )
            )
        return out

    # -- long-lived sandboxes (airlock/executor/sandboxes) ----------------------

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """The container's inspect document; None when it no longer exists."""
        try:
            found: dict[str, Any] = self._client.api.inspect_container(container_id)
        except NotFound:
            return None
        return found

    def image_id(self, image: str) -> str:
        return str(self._client.api.inspect_image(image)["Id"])

    def exec_create(self, container_id: str, argv: list[str], user: str, env: dict[str, str], workdir: str) -> str:
        created = self._client.api.exec_create(
            container_id, argv, stdout=True, stderr=True, stdin=False, tty=False, user=user,
            environment=env, workdir=workdir,
        )  # fmt: skip
        return str(created["Id"])

    def exec_start(self, exec_id: str) -> Iterator[tuple[bytes | None, bytes | None]]:
        stream: Iterator[tuple[bytes | None, bytes | None]] = self._client.api.exec_start(
            exec_id, stream=True, demux=True
        )
        return stream

    def exec_exit_code(self, exec_id: str, timeout_s: float) -> int | None:
        """The exec's exit code once it ended; None if it did not end in time
        (its output stream can close a moment before Docker marks it done)."""
        deadline = time.monotonic() + max(timeout_s, 0.1)
        while True:
            try:
                found = self._client.api.exec_inspect(exec_id)
            except NotFound:  # its container was removed under it
                return None
            if not found.get("Running"):
                code = found.get("ExitCode")
                return int(code) if code is not None else None
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def exec_quiet(self, container_id: str, argv: tuple[str, ...], user: str, timeout_s: float) -> int:
        """Runs argv in the container, output discarded; its exit code (-1 if
        it did not finish in time)."""
        return self.exec_read(container_id, argv, user, timeout_s)[0]

    def exec_read(self, container_id: str, argv: tuple[str, ...], user: str, timeout_s: float) -> tuple[int, bytes]:
        """Runs argv in the container; its exit code (-1 if it did not finish
        within ``timeout_s``, output included) and the first 4 KiB of its
        stdout. The bound is on the wall clock: docker-py reads an exec's
        stream without a timeout, and a process of the sandbox uid can keep
        it open (a stopped shell holding stdout), so a timer shuts the
        stream's socket, which wakes the blocked read."""
        deadline = time.monotonic() + max(timeout_s, 0.1)
        exec_id = self.exec_create(container_id, list(argv), user, {}, "/")
        stream = self.exec_start(exec_id)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            close = getattr(stream, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

        timer = threading.Timer(max(timeout_s, 0.1), expire)
        timer.daemon = True
        timer.start()
        out = bytearray()
        try:
            for chunk, _err in stream:
                if chunk and len(out) < EXEC_READ_MAX:
                    out.extend(chunk[: EXEC_READ_MAX - len(out)])
        except Exception:  # the timer closed it under the read
            if not expired.is_set():
                raise
        finally:
            timer.cancel()
        if expired.is_set():
            return -1, bytes(out)
        code = self.exec_exit_code(exec_id, deadline - time.monotonic())
        return (-1 if code is None else code), bytes(out)

    def exec_socket(
        self, container_id: str, argv: list[str], user: str, *, stdin: bool, timeout_s: float
    ) -> tuple[str, socket.socket, object]:
        """Starts argv in the container and returns the exec's id, its raw
        (hijacked) socket (stdin when asked for, and the multiplexed output)
        and a handle to hold while the socket is used (docker-py's response,
        whose collection would close it). The caller bounds and closes it
        (airlock/executor/_artifacts.py)."""
        created = self._client.api.exec_create(
            container_id, argv, stdout=True, stderr=True, stdin=stdin, tty=False, user=user, workdir="/"
        )
        exec_id = str(created["Id"])
        wrapped = self._client.api.exec_start(exec_id, socket=True)
        raw: socket.socket = getattr(wrapped, "_sock", wrapped)
        raw.settimeout(max(timeout_s, 0.1))
        return exec_id, raw, wrapped

    def pids_current(self, container_id: str) -> int | None:
        """Processes in the container's pids cgroup, when readable."""
        text = _cgroup_file(container_id, "pids", "pids.current")
        return int(text) if text and text.strip().isdigit() else None

    def oom_kills(self, container_id: str) -> int | None:
        """How many processes the kernel OOM-killed in the container so far
        (cgroup v1 memory.oom_control or v2 memory.events), when readable."""
        for name in ("memory.oom_control", "memory.events"):
            text = _cgroup_file(container_id, "memory", name)
            if text is None:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    return int(value)
        return None

    def process_count(self, container_id: str) -> int:
        """Processes in the container as the engine lists them (docker top)."""
        return len(self._client.api.top(container_id).get("Processes") or [])

    def ensure_internal_network(self, name: str, bridge: str, subnet: str | None) -> EgressNetwork:
        """The egress network (internal, no inter-container traffic, a
        configured subnet); returns its gateway address and subnet."""
        options = {
            "com.docker.network.bridge.name": bridge,
            "com.docker.network.bridge.enable_icc": "false",
            "com.docker.network.bridge.enable_ip_masquerade": "false",
        }
        network = self._existing_network(name)
        if network is None:
            chosen = subnet or self._free_subnet()
            hosts = ipaddress.IPv4Network(chosen).hosts()
            ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=chosen, gateway=str(next(hosts)))])
            labels = {MANAGED_LABEL: "true", SUBNET_LABEL: chosen}
            try:
                network = self._client.networks.create(
                    name, driver="bridge", internal=True, options=options, ipam=ipam, labels=labels
                )
            except APIError:
                # Another executor on this host created it first.
                network = self._client.networks.get(name)
            network.reload()
        attrs = network.attrs
        found = attrs.get("Options") or {}
        if not attrs.get("Internal") or any(found.get(k) != v for k, v in options.items()):
            raise EgressSetupError(
                f"docker network {name!r} exists but is not internal with bridge {bridge!r} and icc off; "
                "remove it or choose another egress.network"
            )
        configs = (attrs.get("IPAM") or {}).get("Config") or []
        v4 = [c for c in configs if c.get("Subnet") and ":" not in c["Subnet"]]
        if len(v4) != 1 or not v4[0].get("Gateway"):
            raise EgressSetupError(f"docker network {name!r} needs exactly one IPv4 subnet with a gateway")
        if subnet is not None and ipaddress.ip_network(v4[0]["Subnet"]) != ipaddress.ip_network(subnet):
            raise EgressSetupError(
                f"docker network {name!r} has subnet {v4[0]['Subnet']}, not egress.subnet {subnet}; remove it"
            )
        return EgressNetwork(gateway=str(v4[0]["Gateway"]), subnet=str(v4[0]["Subnet"]))

    def _existing_network(self, name: str) -> Any:
        try:
            network = self._client.networks.get(name)
        except NotFound:
            return None
        network.reload()
        labels = network.attrs.get("Labels") or {}
        if SUBNET_LABEL in labels:
            return network
        # Made by an earlier executor without a configured subnet, on which
        # Docker refuses fixed addresses: replaced if it is ours and unused.
        if labels.get(MANAGED_LABEL) == "true" and not network.attrs.get("Containers"):
            network.remove()
            return None
        raise EgressSetupError(
            f"docker network {name!r} was not made by this version of the executor (no configured subnet) "
            "or still has containers; remove it"
        )

    def _free_subnet(self) -> str:
        """A subnet Docker considers free (it checks its other networks and the
        host's routes), learnt from a throwaway network, since Docker only
        accepts fixed container addresses on a network whose subnet was given."""
        probe = self._client.networks.create(
            f"airlock-subnet-probe-{secrets.token_hex(4)}", driver="bridge", internal=True
        )
        try:
            probe.reload()
            configs = (probe.attrs.get("IPAM") or {}).get("Config") or []
            subnet = next((c["Subnet"] for c in configs if c.get("Subnet") and ":" not in c["Subnet"]), None)
        finally:
            probe.remove()
        if subnet is None:
            raise EgressSetupError("docker assigned no IPv4 subnet; set egress.subnet")
        return str(subnet)

    def close(self) -> None:
        self._client.close()


#: Where the engine puts a container's cgroup, for the cgroupfs and the
#: systemd drivers, under cgroup v1 (per controller) and v2 (unified).
_CGROUP_DIRS = (
    "/sys/fs/cgroup/{controller}/docker/{id}",
    "/sys/fs/cgroup/{controller}/system.slice/docker-{id}.scope",
    "/sys/fs/cgroup/docker/{id}",
    "/sys/fs/cgroup/system.slice/docker-{id}.scope",
)


def _cgroup_file(container_id: str, controller: str, name: str) -> str | None:
    for pattern in _CGROUP_DIRS:
        path = Path(pattern.format(controller=controller, id=container_id)) / name
        try:
            return path.read_text()
        except OSError:
            continue
    return None
