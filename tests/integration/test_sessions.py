"""Session sandboxes and the warm pool (issue 12), against a real executor
daemon on real Docker, under runc and gVisor:

- a session's files persist from call to call, and nothing else does: a
  session sandbox belongs to one (principal, session, image, runtime,
  limits, network);
- no process outlives its call, whatever it did to escape;
- a run is never looser than its decision (cgroup limits read from inside);
- pool containers are hardened, network-less, reap zombies, and are never
  handed out once dead, paused, changed or joined by a foreign process;
- per-call egress credentials in a session: call 1's leaked proxy URL gets
  407 in call 2;
- session limits, idle TTL, lifetime, EndSandboxes, unknown and ended ids;
- draining when the registry entry or the image changes;
- a SIGKILLed executor's leftovers removed at its restart; pool exhaustion.

The executor here has its own egress network and bridge and an upstream
HTTP server on a network of its own, as in test_egress_isolation.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
import yaml
from helpers import REPO, scrape, start_daemon, stop_daemon

from airlock.executor._config import ExecutorConfig
from airlock.executor._options import KEEPER_PIDS, WRAPPER_PIDS, executor_instance
from airlock.v1 import call_pb2, executor_pb2, executor_pb2_grpc

pytestmark = pytest.mark.integration
IMAGE = "airlock/sandbox-python:4"
#: A tag of the test's own, re-pointed by the drain test.
DRAIN_IMAGE = "airlock-test/sessions-drain:1"
NETWORK = "airlock-test-sessions"
BRIDGE = "airlock-tsess0"
MiB = 1 << 20
LIMITS = {"memory_bytes": 256 * MiB, "cpu_millis": 1000, "pids": 64, "timeout_ms": 20_000, "output_bytes": MiB,
          "tmpfs_bytes": 64 * MiB}  # fmt: skip


@dataclass
class Executor:
    socket: str
    token: str
    metrics: str
    folder: Path
    registry: Path
    instance: str
    proc: subprocess.Popen[bytes]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return scrape(self.metrics, name, labels)

    def stub(self, channel: grpc.Channel) -> executor_pb2_grpc.ExecutorServiceStub:
        return executor_pb2_grpc.ExecutorServiceStub(channel)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@dataclass(frozen=True)
class Upstream:
    ip: str
    subnet: str


@dataclass(frozen=True)
class Ran:
    out: str
    err: str
    result: executor_pb2.RunResult

    @property
    def sandbox(self) -> executor_pb2.SandboxUse:
        return self.result.sandbox


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    client = docker.from_env()
    network = client.networks.create(f"airlock-test-sess-up-{secrets.token_hex(4)}", driver="bridge")
    container = None
    try:
        container = client.containers.run(
            IMAGE, ["python3", "-m", "http.server", "8080", "--directory", "/usr/share"], detach=True,
            network=network.name,
        )  # fmt: skip
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        network.reload()
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{ip}:8080/", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield Upstream(ip, network.attrs["IPAM"]["Config"][0]["Subnet"])
    finally:
        if container is not None:
            container.remove(force=True)
        network.remove()
        client.close()


def _registry(folder: Path) -> Path:
    """The shipped registry plus a tool on the test's own image tag."""
    doc = yaml.safe_load((REPO / "deploy" / "tool_registry.yaml").read_text())
    doc["tools"]["drain_probe"] = {
        "description": "the drain test's tool",
        "image": DRAIN_IMAGE,
        "argv": ["python3", "-c", "{code}"],
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    }
    path = folder / "tool_registry.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _start(folder: Path, upstream: Upstream | None, **overrides: Any) -> Executor:
    folder.mkdir(parents=True, exist_ok=True)
    token_file = folder / "executor.token"
    if not token_file.exists():
        token_file.write_text(uuid.uuid4().hex * 2)
        token_file.chmod(0o600)
    registry = folder / "tool_registry.yaml"
    if not registry.exists():
        _registry(folder)
    config: dict[str, Any] = {
        "socket": str(folder / "run" / "executor.sock"),
        "token_file": str(token_file),
        "metrics_listen": "127.0.0.1:0",
        "registry_file": str(registry),
        "runtimes": ["runc", "runsc"],
        "pool": {"size": 2, "check_interval": "2s"},
        "sessions": {"max_sessions": 16, "max_per_principal": 6, "check_interval": "1s"},
        "egress": {"enabled": False},
        **overrides,
    }
    if upstream is not None:
        config["egress"] = {
            "network": NETWORK,
            "bridge": BRIDGE,
            "hosts": {"up.test": [upstream.ip]},
            "connect_timeout": "3s",
        }
    proc, info = start_daemon("executor", config, folder)
    instance = executor_instance(ExecutorConfig(socket=config["socket"], token_file=str(token_file)))
    return Executor(info["socket"], token_file.read_text(), info["metrics"], folder, registry, instance, proc)


@pytest.fixture(scope="module")
def ex(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executor]:
    client = docker.from_env()
    client.images.get(IMAGE).tag(DRAIN_IMAGE)
    executor = _start(tmp_path_factory.mktemp("sessions"), upstream)
    try:
        yield executor
    finally:
        stop_daemon(executor.proc)
        with contextlib.suppress(docker.errors.NotFound):
            client.networks.get(NETWORK).remove()
        # By tag: the tag may still point at the sandbox image itself.
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(DRAIN_IMAGE)
        client.close()
        subprocess.run(["iptables", "-w", "-D", "INPUT", "-i", BRIDGE, "-j", "AIRLOCK-EGRESS"], check=False)
        subprocess.run(["iptables", "-w", "-D", "AIRLOCK-EGRESS", "-i", BRIDGE, "-j", "REJECT"], check=False)
        subprocess.run(["ip6tables", "-w", "-D", "INPUT", "-i", BRIDGE, "-j", "DROP"], check=False)


def run(
    ex: Executor,
    code: str,
    *,
    session: str = "",
    principal: str = "p1",
    mode: str = "session",
    runtime: str = "runc",
    image: str = IMAGE,
    tool: str = "python",
    egress: Upstream | None = None,
    idle_ttl_ms: int = 0,
    max_lifetime_ms: int = 0,
    **limits: int,
) -> Ran:
    network = call_pb2.Network(mode=call_pb2.NETWORK_MODE_NONE)
    if egress is not None:
        network = call_pb2.Network(
            mode=call_pb2.NETWORK_MODE_EGRESS, egress_allowlist=["up.test:8080"], egress_allow_cidrs=[egress.subnet]
        )
    spec = executor_pb2.RunSpec(
        run_id=str(uuid.uuid4()),
        tool=tool,
        image=image,
        argv=["python3", "-I", "-c", code],
        limits=call_pb2.Limits(**{**LIMITS, **limits}),
        network=network,
        runtime=runtime,
        principal=principal,
        session_id=session,
        sandbox=call_pb2.Sandbox(
            mode=call_pb2.SANDBOX_MODE_SESSION if mode == "session" else call_pb2.SANDBOX_MODE_EPHEMERAL,
            idle_ttl_ms=idle_ttl_ms,
            max_lifetime_ms=max_lifetime_ms,
        ),
    )
    out, err = bytearray(), bytearray()
    result = None
    with grpc.insecure_channel(f"unix:{ex.socket}") as channel:
        for event in ex.stub(channel).Run(executor_pb2.RunRequest(spec=spec), metadata=ex.md, timeout=120):
            which = event.WhichOneof("event")
            if which == "output":
                (out if event.output.stream == executor_pb2.STREAM_STDOUT else err).extend(event.output.data)
            elif which == "result":
                result = event.result
    assert result is not None
    return Ran(out.decode(), err.decode(), result)


def sandboxes(ex: Executor, principal: str = "") -> list[executor_pb2.SessionInfo]:
    with grpc.insecure_channel(f"unix:{ex.socket}") as channel:
        found = ex.stub(channel).ListSandboxes(executor_pb2.ListSandboxesRequest(principal=principal), metadata=ex.md)
    return list(found.sessions)


def end(ex: Executor, principal: str, session: str) -> list[executor_pb2.SessionInfo]:
    with grpc.insecure_channel(f"unix:{ex.socket}") as channel:
        ended = ex.stub(channel).EndSandboxes(
            executor_pb2.EndSandboxesRequest(principal=principal, session_id=session), metadata=ex.md, timeout=60
        )
    return list(ended.ended)


def sid() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


WRITE = "open('/work/data.csv', 'w').write('a,b\\n1,2\\n'); print('wrote')"
READ = "import os; print(open('/work/data.csv').read() if os.path.exists('/work/data.csv') else 'missing')"


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_a_file_written_by_call_1_is_there_for_call_2(ex: Executor, runtime: str) -> None:
    s = sid()
    first = run(ex, WRITE, session=s, runtime=runtime)
    second = run(ex, READ, session=s, runtime=runtime)
    assert (first.out, first.result.outcome) == ("wrote\n", executor_pb2.OUTCOME_OK), first.err
    assert second.out == "a,b\n1,2\n\n", second.err
    assert first.sandbox.mode == second.sandbox.mode == call_pb2.SANDBOX_MODE_SESSION
    assert first.sandbox.sandbox_id == second.sandbox.sandbox_id != ""
    assert first.sandbox.container_id == second.sandbox.container_id
    assert (first.sandbox.session_started, second.sandbox.session_started) == (True, False)
    assert (first.sandbox.session_calls, second.sandbox.session_calls) == (1, 2)
    end(ex, "p1", s)


def test_a_sandbox_belongs_to_one_principal_session_class_and_network(ex: Executor, upstream: Upstream) -> None:
    s = sid()
    owner = run(ex, WRITE, session=s)
    others = {
        "another principal, same session id": run(ex, READ, session=s, principal="p2"),
        "another session": run(ex, READ, session=sid()),
        "tighter memory": run(ex, READ, session=s, memory_bytes=128 * MiB),
        "more pids": run(ex, READ, session=s, pids=65),
        "another runtime": run(ex, READ, session=s, runtime="runsc"),
        "egress granted": run(ex, READ, session=s, egress=upstream),
        "ephemeral": run(ex, READ, session=s, mode="ephemeral"),
        "no session id": run(ex, READ, session=""),
    }
    for why, ran in others.items():
        assert ran.out == "missing\n", why
        assert ran.sandbox.container_id != owner.sandbox.container_id, why
    assert others["ephemeral"].sandbox.mode == call_pb2.SANDBOX_MODE_EPHEMERAL
    assert others["no session id"].sandbox.mode == call_pb2.SANDBOX_MODE_EPHEMERAL
    assert run(ex, READ, session=s).out == "a,b\n1,2\n\n"
    for principal in ("p1", "p2"):
        for info in sandboxes(ex, principal):
            end(ex, principal, info.session_id)


PS = "import subprocess; print(subprocess.run(['ps', '-eo', 'uid=,args='], capture_output=True, text=True).stdout)"
ESCAPE = """
import os, subprocess, sys
# A background process in its own session, a double-forked daemon, and a
# child that ignores SIGTERM and SIGHUP: all of them try to outlive the call.
subprocess.Popen(["sleep", "1001"], start_new_session=True, stdout=subprocess.DEVNULL)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "1002"])
    os._exit(0)
subprocess.Popen(["sh", "-c", "trap '' TERM HUP; exec sleep 1003"])
print("started", flush=True)
"""


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_no_process_outlives_its_call(ex: Executor, runtime: str) -> None:
    s = sid()
    started = run(ex, ESCAPE, session=s, runtime=runtime)
    assert started.out == "started\n", started.err
    timed_out = run(ex, "import subprocess, time\nsubprocess.Popen(['sleep', '1004'])\ntime.sleep(60)", session=s,
                    runtime=runtime, timeout_ms=1500)  # fmt: skip
    # gVisor now and then fails the exec itself ("waiting on pid N"), and
    # the sandbox with it: the call says so, and the session goes on in a
    # new sandbox (docs/sessions.md, "Limits").
    if runtime == "runsc" and timed_out.result.error.startswith("sandbox_lost"):
        assert not _container_exists(started.sandbox.container_id)
    else:
        assert timed_out.result.outcome == executor_pb2.OUTCOME_TIMEOUT, (timed_out.err, timed_out.result)
    listed = run(ex, PS, session=s, runtime=runtime)
    lost = listed.result.error.startswith("sandbox_lost")
    if runtime == "runsc" and (lost or listed.sandbox.container_id != started.sandbox.container_id):
        # gVisor now and then ends the whole sandbox when a sweep (kill -9
        # -1) races the killed call (docs/sessions.md, "Limits"): every
        # process of it is gone with it, and the session goes on in a new one.
        assert not _container_exists(started.sandbox.container_id)
        if lost:
            listed = run(ex, PS, session=s, runtime=runtime)
        # A new sandbox: started by this call, or by the timed-out one.
        assert listed.sandbox.session_started or listed.sandbox.container_id == timed_out.sandbox.container_id
    else:
        assert listed.sandbox.container_id == started.sandbox.container_id
    lines = [line.split(None, 1) for line in listed.out.strip().splitlines()]
    assert not [args for _uid, args in lines if "sleep 100" in args], listed.out
    # What is left: the keeper's processes (another uid), and this call's own.
    theirs = [args for uid, args in lines if uid != "65534"]
    assert len(theirs) == KEEPER_PIDS, (listed.out, listed.err[-300:], listed.result.error, timed_out.result.error)
    assert all("docker-init" in a or "timeout" in a or "sleep infinity" in a for a in theirs), listed.out
    end(ex, "p1", s)


STOPPER = """
import os, signal, time
# Stops every process of the sandbox uid, again and again: the call's own
# wrapper, and any sweep the executor runs as that uid.
if os.fork() == 0:
    while True:
        try:
            os.kill(-1, signal.SIGSTOP)
        except OSError:
            pass
print("started", flush=True)
time.sleep(60)
"""


def test_a_call_that_stops_every_sweep_loses_its_session_and_stops_nothing_else(ex: Executor) -> None:
    s = sid()
    first = run(ex, "open('state', 'w').write('x')", session=s)
    t0 = time.monotonic()
    stopped = run(ex, STOPPER, session=s, timeout_ms=1500)
    took = time.monotonic() - t0
    # Within the call's timeout, the sweep's bound and the removal: never hung.
    assert took < 40, took
    assert stopped.result.outcome == executor_pb2.OUTCOME_TIMEOUT or stopped.result.error, stopped.result
    assert not _container_exists(first.sandbox.container_id)
    assert s not in {info.session_id for info in sandboxes(ex, "p1")}
    # The next call of the session starts clean; another principal is served.
    again = run(ex, "import os; print(os.path.exists('state'))", session=s)
    assert (again.out, again.sandbox.session_started) == ("False\n", True)
    other = run(ex, "print('served')", session=sid(), principal="p2")
    assert other.out == "served\n"
    end(ex, "p1", s)
    for info in sandboxes(ex, "p2"):
        end(ex, "p2", info.session_id)


def _container_exists(container_id: str) -> bool:
    client = docker.from_env()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                client.containers.get(container_id)
            except docker.errors.NotFound:
                return False
            time.sleep(0.2)
        return True
    finally:
        client.close()


CGROUP = """
def read(path):
    try:
        return open(path).read().strip()
    except OSError:
        return ""
print(read('/sys/fs/cgroup/memory/memory.limit_in_bytes') or read('/sys/fs/cgroup/memory.max'))
print(read('/sys/fs/cgroup/pids/pids.max') or read('/sys/fs/cgroup/pids.max'))
quota = read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us'), read('/sys/fs/cgroup/cpu/cpu.cfs_period_us')
print(round(int(quota[0]) * 1000 / int(quota[1])) if all(quota) else read('/sys/fs/cgroup/cpu.max'))
"""


@pytest.mark.parametrize("mode", ["ephemeral", "session"])
def test_a_run_is_never_looser_than_its_decision(ex: Executor, mode: str) -> None:
    """The cgroup limits seen from inside are the decided ones: a pool class
    or a session sandbox is made for exactly these limits."""
    s = sid() if mode == "session" else ""
    # Warm the class first, so the checked call runs in a pool container. The
    # refill of a new class can take longer than a fixed pause on a busy
    # machine (a CI run once got a cold container after 1.5 s): an ephemeral
    # check is repeated until it lands in a pool container, within a bound.
    run(ex, "print(1)", mode=mode, session=s, memory_bytes=160 * MiB, cpu_millis=500, pids=40)
    deadline = time.monotonic() + 30
    while True:
        time.sleep(1.5)
        ran = run(ex, CGROUP, mode=mode, session=s, memory_bytes=160 * MiB, cpu_millis=500, pids=40)
        if mode == "session" or ran.sandbox.pool_hit or time.monotonic() > deadline:
            break
    memory, pids, cpu = ran.out.split()
    assert int(memory) == 160 * MiB
    assert int(pids) == 40 + KEEPER_PIDS + WRAPPER_PIDS  # the decided pids are the call's own
    assert int(cpu) == 500
    if mode == "ephemeral":
        assert ran.sandbox.pool_hit
    else:
        end(ex, "p1", s)


def _idle_pool(ex: Executor, want: int = 2, timeout_s: float = 60, pool: str = "") -> list[Any]:
    client = docker.from_env()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            found = client.containers.list(
                filters={
                    "label": [f"airlock.executor={ex.instance}", "airlock.kind=pool", f"airlock.pool={pool or POOL}"],
                    "status": "running",
                },
                ignore_removed=True,
            )
            if len(found) >= want:
                return found
            assert time.monotonic() < deadline, f"the pool never held {want} idle containers"
            time.sleep(0.2)
    finally:
        client.close()


POOL = "airlock/sandbox-python:4|runc|256Mi|1000m|64p|64Mi"
SELF_AUDIT = """
import os
status = dict(line.split(':', 1) for line in open('/proc/self/status'))
print(os.getuid(), status['CapEff'].strip(), status['NoNewPrivs'].strip(), status['Seccomp'].strip())
print(sorted(line.split(':')[0].strip() for line in open('/proc/net/dev').readlines()[2:]))
print(open('/proc/1/cmdline').read().split(chr(0))[0])
"""


def test_pool_containers_are_hardened_and_network_less(ex: Executor) -> None:
    run(ex, "print(1)", mode="ephemeral")
    idle = _idle_pool(ex)
    for container in idle:
        attrs = container.attrs
        host = attrs["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert host["Init"] is True
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert any(o.startswith("seccomp=") for o in host["SecurityOpt"])
        assert host["Memory"] == 256 * MiB
        assert attrs["Config"]["User"] == "65533:65533"  # the keeper, not the calls' uid
    ran = run(ex, SELF_AUDIT, mode="ephemeral")
    assert ran.sandbox.pool_hit
    ids, interfaces, init = ran.out.splitlines()
    assert ids.split() == ["65534", "0000000000000000", "1", "2"]
    assert interfaces == "['lo']"
    assert init == "/sbin/docker-init"  # reaps every orphan a call leaves


def _tamper_kill(c: Any) -> None:
    c.kill()


def _tamper_pause(c: Any) -> None:
    c.pause()


def _tamper_update(c: Any) -> None:
    c.update(mem_limit="512m", memswap_limit="512m")


def _tamper_exec(c: Any) -> None:
    # A foreign process of another uid, left behind by a detached exec.
    c.exec_run(["sleep", "1005"], user="0", detach=True)


@pytest.mark.parametrize(
    ("tamper", "cause"),
    [(_tamper_kill, "died"), (_tamper_pause, "tampered"), (_tamper_update, "tampered"), (_tamper_exec, "tampered")],
    ids=["killed", "paused", "updated", "foreign-process"],
)
def test_a_dead_or_tampered_pool_container_is_never_handed_out(ex: Executor, tamper: Any, cause: str) -> None:
    run(ex, "print(1)", mode="ephemeral")
    idle = _idle_pool(ex)
    before = ex.metric("airlock_executor_pool_replacements_total", {"cause": cause})
    tampered = []
    for container in idle:
        try:
            tamper(container)
            tampered.append(container)
        except docker.errors.APIError:  # replaced by the pool meanwhile (its own check)
            continue
    assert tampered
    time.sleep(0.3)
    ran = run(ex, "print('ran')", mode="ephemeral")
    assert ran.out == "ran\n"
    assert ran.sandbox.container_id not in {c.id for c in idle}
    deadline = time.monotonic() + 15
    while ex.metric("airlock_executor_pool_replacements_total", {"cause": cause}) < before + 1:
        assert time.monotonic() < deadline, "the tampered container was never counted as replaced"
        time.sleep(0.2)
    client = docker.from_env()
    try:
        for container in tampered:  # replaced ones are removed (paused ones too)
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.containers.get(container.id)
                except docker.errors.NotFound:
                    break
                assert time.monotonic() < deadline, f"tampered container {container.short_id} was not removed"
                time.sleep(0.2)
    finally:
        client.close()


def test_a_foreign_process_in_a_gvisor_pool_container_is_found_and_replaced(ex: Executor) -> None:
    """Under gVisor the pids cgroup holds gVisor's own threads, so the claim
    cannot count processes; the process list, counted from inside as the
    keeper, finds a foreign one at the next check_interval."""
    # A gVisor session's first call claims from the pool, which keeps its class warm.
    warm = sid()
    run(ex, "print(1)", session=warm, runtime="runsc")
    end(ex, "p1", warm)
    idle = _idle_pool(ex, want=1, pool=POOL.replace("|runc|", "|runsc|"))
    before = ex.metric("airlock_executor_pool_replacements_total", {"cause": "tampered"})
    idle[0].exec_run(["sleep", "1005"], user="0", detach=True)
    client = docker.from_env()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.containers.get(idle[0].id)
            except docker.errors.NotFound:
                break
            assert time.monotonic() < deadline, "the gVisor pool container with a foreign process was kept"
            time.sleep(0.2)
    finally:
        client.close()
    assert ex.metric("airlock_executor_pool_replacements_total", {"cause": "tampered"}) >= before + 1
    s = sid()
    ran = run(ex, "print('ran')", session=s, runtime="runsc")
    assert (ran.out, ran.sandbox.container_id != idle[0].id) == ("ran\n", True)
    end(ex, "p1", s)


LEAK = """
import os, urllib.request
print(os.environ["HTTP_PROXY"])
print(urllib.request.urlopen("http://up.test:8080/", timeout=10).status)
"""
REPLAY = """
import urllib.error, urllib.request
def get(proxy):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    try:
        return opener.open("http://up.test:8080/", timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
import os
print(get(%r), get(os.environ["HTTP_PROXY"]))
"""


def test_a_proxy_url_leaked_by_call_1_is_refused_in_call_2(ex: Executor, upstream: Upstream) -> None:
    s = sid()
    first = run(ex, LEAK, session=s, egress=upstream)
    leaked, status = first.out.split()
    assert status == "200", first.err
    second = run(ex, REPLAY % leaked, session=s, egress=upstream)
    assert second.sandbox.container_id == first.sandbox.container_id
    assert second.out.split() == ["407", "200"], second.err
    end(ex, "p1", s)


def test_session_limits_refuse_with_session_limit(ex: Executor) -> None:
    before = ex.metric("airlock_executor_refused_runs_total", {"reason": "session_limit"})
    made = [sid() for _ in range(6)]
    for s in made:
        run(ex, "print(1)", session=s, principal="p-limit")
    with pytest.raises(grpc.RpcError) as info:
        run(ex, "print(1)", session=sid(), principal="p-limit")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (info.value.details() or "").startswith("session_limit: principal 'p-limit' already has 6 live sessions")
    assert ex.metric("airlock_executor_refused_runs_total", {"reason": "session_limit"}) == before + 1
    # Another principal is not affected, and an ended session frees a place.
    assert run(ex, "print(2)", session=sid(), principal="p-other").out == "2\n"
    end(ex, "p-limit", made[0])
    assert run(ex, "print(3)", session=sid(), principal="p-limit").out == "3\n"
    for principal in ("p-limit", "p-other"):
        for info_ in sandboxes(ex, principal):
            end(ex, principal, info_.session_id)


def test_an_ended_or_unknown_session_id_starts_a_new_sandbox(ex: Executor) -> None:
    s = sid()
    first = run(ex, WRITE, session=s)
    assert [i.sandbox_id for i in end(ex, "p1", s)] == [first.sandbox.sandbox_id]
    again = run(ex, READ, session=s)
    assert again.out == "missing\n"
    assert again.sandbox.session_started
    assert again.sandbox.sandbox_id != first.sandbox.sandbox_id
    assert end(ex, "p1", "never-seen") == []
    end(ex, "p1", s)


class Watch:
    """The WatchSandboxes stream in a thread: the snapshot, then events."""

    def __init__(self, ex: Executor) -> None:
        self.events: list[executor_pb2.WatchSandboxesResponse] = []
        self._channel = grpc.insecure_channel(f"unix:{ex.socket}")
        self._call = ex.stub(self._channel).WatchSandboxes(executor_pb2.WatchSandboxesRequest(), metadata=ex.md)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._call:
                self.events.append(event)
        except grpc.RpcError:
            pass

    def ended(self, sandbox_id: str, timeout_s: float = 30) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for e in self.events:
                if e.WhichOneof("event") == "ended" and e.ended.session.sandbox_id == sandbox_id:
                    return e.ended.cause
            time.sleep(0.1)
        raise AssertionError(f"no ended event for {sandbox_id}")

    def close(self) -> None:
        self._call.cancel()
        self._channel.close()


def test_idle_ttl_and_lifetime_end_a_session_and_are_reported(ex: Executor) -> None:
    watch = Watch(ex)
    try:
        idle = run(ex, "print(1)", session=sid(), idle_ttl_ms=1500, max_lifetime_ms=60_000)
        lived = sid()
        first = run(ex, "print(1)", session=lived, idle_ttl_ms=60_000, max_lifetime_ms=2500)
        for _ in range(3):
            time.sleep(1)
            run(ex, "print(1)", session=lived, idle_ttl_ms=60_000, max_lifetime_ms=2500)
        assert watch.ended(idle.sandbox.sandbox_id) == "idle"
        assert watch.ended(first.sandbox.sandbox_id) == "lifetime"
        assert watch.events[0].WhichOneof("event") == "snapshot"
        started = [e.started.session.sandbox_id for e in watch.events if e.WhichOneof("event") == "started"]
        assert idle.sandbox.sandbox_id in started
        assert first.sandbox.sandbox_id in started
        assert ex.metric("airlock_executor_session_ends_total", {"cause": "idle"}) >= 1
        assert ex.metric("airlock_executor_session_ends_total", {"cause": "lifetime"}) >= 1
    finally:
        watch.close()
        for info in sandboxes(ex, "p1"):
            end(ex, "p1", info.session_id)


def test_sandboxes_are_drained_when_the_registry_entry_or_the_image_changes(ex: Executor) -> None:
    watch = Watch(ex)
    client = docker.from_env()
    try:
        s = sid()
        first = run(ex, WRITE, session=s, image=DRAIN_IMAGE, tool="drain_probe")
        # The registry entry of a tool on this image changes.
        doc = yaml.safe_load(ex.registry.read_text())
        doc["tools"]["drain_probe"]["description"] = "changed"
        ex.registry.write_text(yaml.safe_dump(doc))
        second = run(ex, READ, session=s, image=DRAIN_IMAGE, tool="drain_probe")
        assert second.sandbox.session_started
        assert second.out == "missing\n"
        assert watch.ended(first.sandbox.sandbox_id) == "drained"
        # The image tag now points at another image.
        derived = client.images.build(
            fileobj=io.BytesIO(f"FROM {IMAGE}\nLABEL airlock.test=drain\n".encode()), rm=True
        )[0]
        derived.tag(DRAIN_IMAGE)
        third = run(ex, READ, session=s, image=DRAIN_IMAGE, tool="drain_probe")
        assert third.sandbox.session_started
        assert watch.ended(second.sandbox.sandbox_id) == "drained"
        end(ex, "p1", s)
    finally:
        watch.close()
        client.close()


def test_pool_exhaustion_makes_calls_wait_or_cold_start_never_fail(ex: Executor) -> None:
    _idle_pool(ex)
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda i: run(ex, f"print({i})", mode="ephemeral"), range(12)))
    assert [r.out for r in results] == [f"{i}\n" for i in range(12)]
    assert all(r.result.outcome == executor_pb2.OUTCOME_OK for r in results)
    hits = sum(r.sandbox.pool_hit for r in results)
    assert 0 < hits < 12  # some warm, the rest cold-started


def _ours(instance: str) -> list[Any]:
    client = docker.from_env()
    try:
        # ignore_removed: a container removed between the list and its inspect.
        return list(
            client.containers.list(all=True, filters={"label": [f"airlock.executor={instance}"]}, ignore_removed=True)
        )
    finally:
        client.close()


def _gone(ids: set[str], instance: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not ids & {c.id for c in _ours(instance)}:
            return True
        time.sleep(0.2)
    return False


def test_a_sigkilled_executors_reaper_removes_its_pool_and_session_containers() -> None:
    """Nobody will run a call in them again: the reaper (which outlives a
    SIGKILL of the executor) removes them at once, not at their deadline."""
    Path("/tmp/airlock-tests").mkdir(mode=0o711, exist_ok=True)
    ex = _start(Path(tempfile.mkdtemp(prefix="killed-", dir="/tmp/airlock-tests")), None)
    run(ex, WRITE, session=sid())
    _idle_pool(ex, want=1)
    left = {c.id for c in _ours(ex.instance) if c.labels.get("airlock.kind") in ("pool", "session")}
    assert left
    ex.proc.send_signal(signal.SIGKILL)
    ex.proc.wait(10)
    assert _gone(left, ex.instance, 20)


def test_an_executor_and_reaper_both_sigkilled_leave_sandboxes_its_restart_removes() -> None:
    # A short folder: the executor's socket path must fit in 107 bytes.
    Path("/tmp/airlock-tests").mkdir(mode=0o711, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="both-", dir="/tmp/airlock-tests"))
    first = _start(folder, None)
    s = sid()
    run(first, WRITE, session=s)
    _idle_pool(first, want=1)
    reaper = json.loads((folder / "executor.ready").read_text())["reaper_pid"]
    os.kill(reaper, signal.SIGKILL)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    left = {c.id for c in _ours(first.instance)}
    assert left
    (folder / "executor.ready").unlink()
    second = _start(folder, None)
    try:
        assert _gone(left, first.instance, 5)
        assert json.loads((folder / "executor.ready").read_text())["removed_leftovers"] >= len(left)
        assert run(second, READ, session=s).out == "missing\n"
    finally:
        stop_daemon(second.proc)
        shutil.rmtree(folder / "run", ignore_errors=True)
