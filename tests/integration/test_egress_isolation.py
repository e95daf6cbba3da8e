"""The egress proxy between real sandboxes (issue 10, item 9 and the egress
"should fix" items), against a real executor daemon on real Docker:

- one sandbox holding ~300 idle connections to the proxy no longer blocks
  another call's egress (it was 0 of 8);
- a live credential works only from its own sandbox's address (it used to
  work from another call's sandbox);
- a name whose answer embeds an allowed IPv4 in 6to4/Teredo form is never
  dialled (the proxy used to try the public relay address);
- egress_allow_cidrs cannot open loopback or the metadata addresses.

The executor here runs on a network and bridge of its own, so it cannot
disturb a stack's egress; upstream is a plain HTTP server in a container on
its own Docker network, opened with egress_allow_cidrs."""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import grpc
import pytest
from helpers import start_daemon, stop_daemon

from airlock.v1 import call_pb2, executor_pb2, executor_pb2_grpc

pytestmark = pytest.mark.integration
IMAGE = "airlock/sandbox-python:4"
NETWORK = "airlock-test-egress-iso"
BRIDGE = "airlock-tiso0"


@dataclass(frozen=True)
class Upstream:
    ip: str
    subnet: str


@dataclass(frozen=True)
class Executor:
    socket: str
    token: str
    proxy: str


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    client = docker.from_env()
    tag = secrets.token_hex(4)
    network = client.networks.create(f"airlock-test-iso-up-{tag}", driver="bridge", labels={"airlock.test": "egress"})
    container = None
    try:
        container = client.containers.run(
            IMAGE,
            ["python3", "-m", "http.server", "8080", "--directory", "/usr/share"],
            detach=True,
            network=network.name,
            labels={"airlock.test": "egress"},
        )
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        network.reload()
        subnet = network.attrs["IPAM"]["Config"][0]["Subnet"]
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{ip}:8080/", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield Upstream(ip, subnet)
    finally:
        if container is not None:
            container.remove(force=True)
        network.remove()
        client.close()


def _six_to_four(ipv4: str) -> str:
    return str(ipaddress.IPv6Address((0x2002 << 112) | (int(ipaddress.IPv4Address(ipv4)) << 80) | 1))


def _teredo(server: str, client: str) -> str:
    # 2001:0000:<server v4>:<flags>:<port ^ ffff>:<client v4 ^ ffffffff>
    value = (0x20010000 << 96) | (int(ipaddress.IPv4Address(server)) << 64) | (0xFFFF << 32)
    return str(ipaddress.IPv6Address(value | (int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF)))


@pytest.fixture(scope="module")
def executor(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executor]:
    folder = tmp_path_factory.mktemp("egress-iso")
    token = uuid.uuid4().hex * 2
    (folder / "executor.token").write_text(token)
    (folder / "executor.token").chmod(0o600)
    proc, info = start_daemon(
        "executor",
        {
            "socket": str(folder / "run" / "executor.sock"),
            "token_file": str(folder / "executor.token"),
            "metrics_listen": "127.0.0.1:0",
            "allowed_images": [IMAGE],
            "egress": {
                "network": NETWORK,
                "bridge": BRIDGE,
                "max_connections": 32,
                "header_timeout": "20s",
                "connect_timeout": "3s",
                "hosts": {
                    "up.test": [upstream.ip],
                    "six.test": [_six_to_four(upstream.ip)],
                    "teredo.test": [_teredo(upstream.ip, upstream.ip)],
                    "loop.test": ["127.0.0.1"],
                    "meta.test": ["169.254.169.254"],
                },
            },
        },
        folder,
    )
    try:
        assert "proxy" in info["egress"], info["egress"]
        yield Executor(info["socket"], token, info["egress"]["proxy"])
    finally:
        stop_daemon(proc)
        client = docker.from_env()
        try:
            client.networks.get(NETWORK).remove()
        except docker.errors.NotFound:
            pass
        finally:
            client.close()
        # The jump and REJECT rules name this test's bridge; drop them.
        subprocess.run(["iptables", "-w", "-D", "INPUT", "-i", BRIDGE, "-j", "AIRLOCK-EGRESS"], check=False)
        subprocess.run(["iptables", "-w", "-D", "AIRLOCK-EGRESS", "-i", BRIDGE, "-j", "REJECT"], check=False)
        subprocess.run(["ip6tables", "-w", "-D", "INPUT", "-i", BRIDGE, "-j", "DROP"], check=False)


class Run:
    """One egress run in a thread; output lines as they arrive, then the result."""

    def __init__(self, ex: Executor, upstream: Upstream, code: str, *, allow: tuple[str, ...] = ()) -> None:
        self.lines: list[str] = []
        self.result: Any = None
        self.error: BaseException | None = None
        self._buf = b""
        self._seen = threading.Condition()
        spec = executor_pb2.RunSpec(
            run_id=str(uuid.uuid4()),
            tool="fetch",
            image=IMAGE,
            argv=["python3", "-I", "-u", "-c", code],
            limits=call_pb2.Limits(timeout_ms=60_000),
            network=call_pb2.Network(
                mode=call_pb2.NETWORK_MODE_EGRESS,
                egress_allowlist=["up.test:8080", *allow],
                egress_allow_cidrs=[upstream.subnet, *([] if not allow else ["127.0.0.0/8", "169.254.0.0/16"])],
            ),
            runtime="runc",
        )
        self._thread = threading.Thread(target=self._go, args=(ex, spec), daemon=True)
        self._thread.start()

    def _go(self, ex: Executor, spec: Any) -> None:
        try:
            with grpc.insecure_channel(f"unix:{ex.socket}") as channel:
                for event in executor_pb2_grpc.ExecutorServiceStub(channel).Run(
                    executor_pb2.RunRequest(spec=spec), metadata=(("authorization", f"Bearer {ex.token}"),), timeout=120
                ):
                    if event.WhichOneof("event") == "output":
                        with self._seen:
                            self._buf += event.output.data
                            *done, self._buf = self._buf.split(b"\n")
                            self.lines.extend(line.decode() for line in done)
                            self._seen.notify_all()
                    elif event.WhichOneof("event") == "result":
                        self.result = event.result
        except BaseException as exc:  # noqa: BLE001 - reported by wait()
            self.error = exc
        finally:
            with self._seen:
                self._seen.notify_all()

    def line(self, prefix: str, timeout_s: float = 60) -> str:
        """The first output line starting with prefix, waiting for it."""
        deadline = time.monotonic() + timeout_s
        with self._seen:
            while True:
                found = next((line for line in self.lines if line.startswith(prefix)), None)
                if found is not None:
                    return found.removeprefix(prefix)
                left = deadline - time.monotonic()
                assert left > 0, (prefix, self.lines)
                assert self._thread.is_alive(), (prefix, self.lines, self.error)
                self._seen.wait(left)

    def wait(self) -> Any:
        self._thread.join(120)
        assert self.error is None, self.error
        return self.result


FETCH = """
import json, os, urllib.error, urllib.request
def get(url, proxy=None):
    handler = urllib.request.ProxyHandler({"http": proxy} if proxy else None)
    try:
        with urllib.request.build_opener(handler).open(url, timeout=15) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return [e.code, e.headers.get("X-Airlock-Egress-Reason")]
    except OSError as e:
        return type(e).__name__
"""

HOLD_IDLE = """
import os, socket, time, urllib.parse
proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
held = []
for _ in range(300):
    try:
        held.append(socket.create_connection((proxy.hostname, proxy.port), timeout=5))
    except OSError:
        pass
print(f"holding {len(held)}", flush=True)
time.sleep(25)
"""


def test_one_sandbox_holding_300_idle_connections_does_not_block_another(
    executor: Executor, upstream: Upstream
) -> None:
    hog = Run(executor, upstream, HOLD_IDLE)
    hog.line("holding ")
    victim = Run(
        executor,
        upstream,
        FETCH + "print('statuses ' + json.dumps([get('http://up.test:8080/') for _ in range(8)]), flush=True)",
    )
    statuses = json.loads(victim.line("statuses "))
    assert victim.wait().outcome == executor_pb2.OUTCOME_OK
    print(f"\nwhile another sandbox held 300 idle connections: {statuses.count(200)} of 8 calls got through")
    assert statuses == [200] * 8
    hog.wait()


LEAK_URL = (
    FETCH
    + """
print("own " + json.dumps(get("http://up.test:8080/")), flush=True)
print("url " + os.environ["HTTP_PROXY"], flush=True)
import time; time.sleep(20)
"""
)


def test_a_live_credential_works_only_from_its_own_sandbox(executor: Executor, upstream: Upstream) -> None:
    owner = Run(executor, upstream, LEAK_URL)
    assert json.loads(owner.line("own ")) == 200
    leaked = owner.line("url ")
    # Another call, allowed the same host, replays the first call's live
    # credential from its own sandbox.
    thief = Run(executor, upstream, FETCH + f"print('stolen ' + json.dumps(get('http://up.test:8080/', {leaked!r})))")
    assert json.loads(thief.line("stolen ")) == [407, "unauthenticated"]
    thief_result = thief.wait()
    assert list(thief_result.egress) == []  # not charged to either call
    owner_result = owner.wait()
    assert [(r.host, r.allowed) for r in owner_result.egress] == [("up.test", True)]


NEVER = (
    FETCH
    + """
print("six " + json.dumps(get("http://six.test:8080/")), flush=True)
print("teredo " + json.dumps(get("http://teredo.test:8080/")), flush=True)
print("loop " + json.dumps(get("http://loop.test:8080/")), flush=True)
print("meta " + json.dumps(get("http://meta.test:8080/")), flush=True)
"""
)


def test_embedded_ipv4_loopback_and_metadata_are_never_dialled(executor: Executor, upstream: Upstream) -> None:
    """six.test and teredo.test carry the upstream's (allowed) IPv4 address;
    the call also lists 127.0.0.0/8 and 169.254.0.0/16 in egress_allow_cidrs."""
    names = ("six", "teredo", "loop", "meta")
    run = Run(executor, upstream, NEVER, allow=tuple(f"{name}.test:8080" for name in names))
    answers = {name: json.loads(run.line(f"{name} ")) for name in names}
    result = run.wait()
    assert answers == {name: [403, "address_denied"] for name in names}
    records = {r.host: r for r in result.egress}
    assert "never dialled" in records["six.test"].message
    assert "never dialled" in records["teredo.test"].message
    assert "127.0.0.1 is a loopback address; egress_allow_cidrs never opens it" in records["loop.test"].message
    assert "the cloud metadata address; egress_allow_cidrs never opens it" in records["meta.test"].message
    assert all(not r.allowed and r.address == "" for r in result.egress)


def test_sandboxes_get_fixed_addresses_on_the_egress_network(executor: Executor, upstream: Upstream) -> None:
    run = Run(executor, upstream, "import socket; print('addr ' + socket.gethostbyname(socket.gethostname()))")
    address = run.line("addr ")
    run.wait()
    client = docker.from_env()
    try:
        subnet = client.networks.get(NETWORK).attrs["IPAM"]["Config"][0]["Subnet"]
        labels = client.networks.get(NETWORK).attrs["Labels"]
    finally:
        client.close()
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    assert labels["airlock.egress.subnet"] == subnet
