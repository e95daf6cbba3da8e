"""The container runtime seam and its Docker implementation. Everything
here blocks; the runner calls it from worker threads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import docker
from docker.errors import APIError, NotFound

from executor._options import INSTANCE_LABEL, MANAGED_LABEL
from executor.egress.network import EgressSetupError


class ContainerRuntime(Protocol):
    def create(self, options: dict[str, Any]) -> str: ...
    def attach(self, container_id: str) -> Iterator[tuple[bytes | None, bytes | None]]: ...
    def start(self, container_id: str) -> None: ...
    def kill(self, container_id: str) -> None: ...
    def wait(self, container_id: str) -> tuple[int, bool]: ...
    def remove(self, container_id: str) -> None: ...
    def list_managed(self, instance: str) -> list[str]: ...


class DockerRuntime:
    def __init__(self, base_url: str, max_pool_size: int) -> None:
        # One pooled connection per concurrent run (attach holds one) plus
        # headroom for create/start/wait/remove calls.
        self._client = docker.DockerClient(base_url=base_url, version="auto", max_pool_size=max_pool_size * 2 + 4)

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

    def wait(self, container_id: str) -> tuple[int, bool]:
        """Exit code and whether the kernel OOM-killed it."""
        status = self._client.api.wait(container_id)
        state = self._client.api.inspect_container(container_id)["State"]
        return int(status.get("StatusCode", -1)), bool(state.get("OOMKilled"))

    def remove(self, container_id: str) -> None:
        with contextlib.suppress(NotFound):
            self._client.api.remove_container(container_id, force=True)

    def list_managed(self, instance: str) -> list[str]:
        """This executor's containers (by label), running or not."""
        labels = [f"{MANAGED_LABEL}=true", f"{INSTANCE_LABEL}={instance}"]
        found = self._client.api.containers(all=True, filters={"label": labels})
        return [str(c["Id"]) for c in found]

    def ensure_internal_network(self, name: str, bridge: str) -> str:
        """The egress network (internal, no inter-container traffic); returns its gateway address."""
        options = {
            "com.docker.network.bridge.name": bridge,
            "com.docker.network.bridge.enable_icc": "false",
            "com.docker.network.bridge.enable_ip_masquerade": "false",
        }
        try:
            network = self._client.networks.get(name)
        except NotFound:
            try:
                network = self._client.networks.create(
                    name, driver="bridge", internal=True, options=options, labels={MANAGED_LABEL: "true"}
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
        gateway = next((c.get("Gateway") for c in configs if c.get("Gateway") and ":" not in c["Gateway"]), None)
        if gateway is None:
            raise EgressSetupError(f"docker network {name!r} has no IPv4 gateway address for the proxy")
        return str(gateway)

    def close(self) -> None:
        self._client.close()
