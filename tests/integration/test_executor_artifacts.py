"""Artifacts, the executor's side (issue 14), against a real executor daemon
on real Docker: input files copied into /inputs (read-only for the call),
files left in /outputs collected and streamed back before the result, and
what hostile code in the sandbox can put there (symlinks, FIFOs, hard
links, nested trees, a huge sparse file, 10,000 files, names that are not
names) skipped with the right reasons, within the limits, with the
executor serving the next call. Ephemeral calls (pool and on-demand
containers) and session calls, under runc and gVisor (docs/executor-artifacts.md)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
from helpers import REPO, scrape, start_daemon, stop_daemon

from airlock.v1 import call_pb2, executor_pb2, executor_pb2_grpc

pytestmark = pytest.mark.integration
IMAGE = "airlock/sandbox-python:4"
NETWORK = "airlock-test-artifacts"
BRIDGE = "airlock-tart0"
MiB = 1 << 20
LIMITS = {"memory_bytes": 256 * MiB, "cpu_millis": 1000, "pids": 64, "timeout_ms": 30_000, "output_bytes": MiB,
          "tmpfs_bytes": 64 * MiB}  # fmt: skip
OUTPUTS = {"max_outputs": 20, "max_output_bytes": 8 * MiB, "max_output_file_bytes": 4 * MiB}


@dataclass
class Executor:
    socket: str
    token: str
    metrics: str
    proc: Any

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return scrape(self.metrics, name, labels)


@dataclass
class Ran:
    out: str
    err: str
    result: executor_pb2.RunResult
    files: dict[str, bytes] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    """Every event in order: started, output, file:<name>, result."""

    @property
    def skipped(self) -> dict[str, str]:
        return {s.name: s.reason for s in self.result.skipped_outputs}


@pytest.fixture(scope="module")
def ex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executor]:
    folder: Path = tmp_path_factory.mktemp("artifacts")
    token_file = folder / "executor.token"
    token_file.write_text(uuid.uuid4().hex * 2)
    token_file.chmod(0o600)
    config = {
        "socket": str(folder / "run" / "executor.sock"),
        "token_file": str(token_file),
        "metrics_listen": "127.0.0.1:0",
        "registry_file": str(REPO / "deploy" / "tool_registry.yaml"),
        "runtimes": ["runc", "runsc"],
        "pool": {"size": 1, "check_interval": "2s"},
        "sessions": {"max_sessions": 8, "max_per_principal": 8},
        "egress": {"network": NETWORK, "bridge": BRIDGE, "connect_timeout": "3s"},
        "artifacts": {"max_inputs": 8, "max_input_bytes": "16Mi", "transfer_timeout": "20s"},
        # Room for a 10 GiB sparse file in the one test that asks for it
        # (the fsize ulimit is the tmpfs size); every other call asks for 64 MiB.
        "limits": {"tmpfs": "12Gi"},
    }
    proc, info = start_daemon("executor", config, folder)
    try:
        yield Executor(info["socket"], token_file.read_text(), info["metrics"], proc)
    finally:
        stop_daemon(proc)
        client = docker.from_env()
        with contextlib.suppress(docker.errors.NotFound):
            client.networks.get(NETWORK).remove()
        client.close()
        subprocess.run(["iptables", "-w", "-D", "INPUT", "-i", BRIDGE, "-j", "AIRLOCK-EGRESS"], check=False)
        subprocess.run(["iptables", "-w", "-D", "AIRLOCK-EGRESS", "-i", BRIDGE, "-j", "REJECT"], check=False)
        subprocess.run(["ip6tables", "-w", "-D", "INPUT", "-i", BRIDGE, "-j", "DROP"], check=False)


def run(
    ex: Executor,
    code: str,
    *,
    inputs: dict[str, bytes] | None = None,
    artifacts: dict[str, int] | None = None,
    session: str = "",
    runtime: str = "runc",
    run_id: str = "",
    egress: bool = False,
    **limits: int,
) -> Ran:
    network = call_pb2.Network(mode=call_pb2.NETWORK_MODE_NONE)
    if egress:
        network = call_pb2.Network(mode=call_pb2.NETWORK_MODE_EGRESS, egress_allowlist=["example.test:443"])
    spec = executor_pb2.RunSpec(
        run_id=run_id or str(uuid.uuid4()),
        tool="python",
        image=IMAGE,
        argv=["python3", "-I", "-c", code],
        limits=call_pb2.Limits(**{**LIMITS, **limits}),
        network=network,
        runtime=runtime,
        principal="p1",
        session_id=session,
        sandbox=call_pb2.Sandbox(mode=call_pb2.SANDBOX_MODE_SESSION if session else call_pb2.SANDBOX_MODE_EPHEMERAL),
        artifacts=call_pb2.ArtifactLimits(**(artifacts or {})),
    )
    request = executor_pb2.RunRequest(
        spec=spec, inputs=[executor_pb2.InputFile(name=k, content=v) for k, v in (inputs or {}).items()]
    )
    out, err = bytearray(), bytearray()
    ran = Ran("", "", executor_pb2.RunResult())
    open_files: dict[str, bytearray] = {}
    with grpc.insecure_channel(f"unix:{ex.socket}", options=[("grpc.max_send_message_length", 64 * MiB)]) as channel:
        stub = executor_pb2_grpc.ExecutorServiceStub(channel)
        for event in stub.Run(request, metadata=ex.md, timeout=180):
            which = event.WhichOneof("event")
            if which == "output":
                (out if event.output.stream == executor_pb2.STREAM_STDOUT else err).extend(event.output.data)
                ran.order.append("output")
            elif which == "output_file":
                chunk = event.output_file
                assert chunk.name not in ran.files, f"{chunk.name!r} sent twice"
                open_files.setdefault(chunk.name, bytearray()).extend(chunk.data)
                if chunk.eof:
                    ran.files[chunk.name] = bytes(open_files.pop(chunk.name))
                    ran.sizes[chunk.name] = chunk.size
                ran.order.append(f"file:{chunk.name}")
            elif which == "result":
                ran.result = event.result
                ran.order.append("result")
            else:
                ran.order.append(which or "")
    assert ran.order[-1:] == ["result"], ran.order[-5:]
    assert not open_files, f"files whose last chunk never came: {list(open_files)}"
    ran.out, ran.err = out.decode(), err.decode()
    return ran


def refusal(ex: Executor, inputs: dict[str, bytes], artifacts: dict[str, int]) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        run(ex, "print('never')", inputs=inputs, artifacts=artifacts)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    return str(caught.value.details()).partition(":")[0]


TRIES = """
import os, json
tried = {}
for what, act in [
    ("write", lambda: open('/inputs/data.csv', 'a').write('x')),
    ("chmod", lambda: os.chmod('/inputs/data.csv', 0o666)),
    ("unlink", lambda: os.unlink('/inputs/data.csv')),
    ("rename", lambda: os.rename('/inputs/data.csv', '/inputs/moved')),
    ("create", lambda: open('/inputs/new', 'w')),
    ("chmod_dir", lambda: os.chmod('/inputs', 0o777)),
]:
    try:
        act()
        tried[what] = "done"
    except OSError as exc:
        tried[what] = type(exc).__name__
print(json.dumps(tried))
print(sorted(os.listdir('/inputs')))
data = open('/inputs/data.csv', 'rb').read()
open('/outputs/result.txt', 'wb').write(data.upper())
open('/outputs/random.bin', 'wb').write(open('/inputs/blob.bin', 'rb').read()[::-1])
open('/outputs/empty', 'wb').close()
"""


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_inputs_are_read_only_and_outputs_come_back(ex: Executor, runtime: str) -> None:
    blob = os.urandom(600 * 1024)
    inputs = {"data.csv": b"a,b\n1,2\n", "blob.bin": blob, "d\u00e9j\u00e0 vu.txt": b"ok"}
    ran = run(ex, TRIES, inputs=inputs, artifacts={**OUTPUTS, "max_inputs": 3}, runtime=runtime)
    assert ran.result.outcome == executor_pb2.OUTCOME_OK, (ran.err, ran.result)
    tried, listed = ran.out.splitlines()[:2]
    assert all(v != "done" for v in json.loads(tried).values()), tried
    assert listed == str(sorted(inputs)), listed
    assert ran.files == {"result.txt": b"A,B\n1,2\n", "random.bin": blob[::-1], "empty": b""}
    assert hashlib.sha256(ran.files["random.bin"]).hexdigest() == hashlib.sha256(blob[::-1]).hexdigest()
    assert ran.sizes == {"result.txt": 8, "random.bin": len(blob), "empty": 0}
    # Several chunks for the large file, all after the program's output and before the result.
    assert ran.order.count("file:random.bin") == 3, ran.order
    assert ran.order.index("file:result.txt") > max(i for i, e in enumerate(ran.order) if e == "output")
    assert list(ran.result.skipped_outputs) == []
    assert ran.result.sandbox.mode == call_pb2.SANDBOX_MODE_EPHEMERAL


def test_a_call_without_files_has_no_inputs_or_outputs_to_see(ex: Executor) -> None:
    ran = run(ex, "import os; print(os.path.exists('/inputs'), os.path.exists('/outputs'))", runtime="runsc")
    # A one-shot (cold) container, exactly as before: neither folder exists.
    assert ran.out == "False False\n", ran.err
    assert ran.order.count("result") == 1
    assert not ran.files


def test_inputs_above_grpcs_default_message_size_arrive(ex: Executor) -> None:
    big = os.urandom(10 * MiB)
    code = "import hashlib; print(hashlib.sha256(open('/inputs/big', 'rb').read()).hexdigest())"
    ran = run(ex, code, inputs={"big": big}, artifacts={"max_inputs": 1})
    assert ran.out.strip() == hashlib.sha256(big).hexdigest(), ran.err


HOSTILE = r"""
import os, signal
os.symlink('/etc/shadow', '/outputs/shadow')
os.symlink('/outputs/ok.txt', '/outputs/inner-link')
os.mkfifo('/outputs/fifo')
open('/outputs/a', 'w').write('linked')
os.link('/outputs/a', '/outputs/b')
os.makedirs('/outputs/dir/deeper')
open('/outputs/dir/x', 'w').write('nested')
with open('/outputs/big', 'wb') as f:
    f.truncate(32 << 20)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
try:
    with open('/outputs/huge', 'wb') as f:
        f.truncate(10 << 30)
    print('huge made')
except OSError as exc:
    os.unlink('/outputs/huge')
    print('huge refused', exc.errno)
os.close(os.open(b'/outputs/bad\nname', os.O_CREAT | os.O_WRONLY))
os.close(os.open(b'/outputs/\xff\xfe', os.O_CREAT | os.O_WRONLY))
os.close(os.open('/outputs/e\u0301', os.O_CREAT | os.O_WRONLY))
open('/outputs/ok.txt', 'w').write('fine')
os.chmod('/outputs/ok.txt', 0)
"""


def test_hostile_outputs_are_skipped_with_their_reasons(ex: Executor) -> None:
    before = ex.metric("airlock_executor_skipped_outputs_total", {"reason": "not_regular"})
    t0 = time.monotonic()
    ran = run(ex, HOSTILE, artifacts={**OUTPUTS, "max_output_file_bytes": MiB})
    assert time.monotonic() - t0 < 30
    assert ran.result.outcome == executor_pb2.OUTCOME_OK, (ran.err, ran.result)
    assert ran.files == {"ok.txt": b"fine"}
    expected = {
        "shadow": "not_regular",
        "inner-link": "not_regular",
        "fifo": "not_regular",
        "a": "not_regular",
        "b": "not_regular",
        "dir": "nested",
        "big": "too_large",
        "bad?name": "bad_name",
        "\ufffd\ufffd": "bad_name",
        "e\u0301": "bad_name",
    }
    if "huge made" in ran.out:
        expected["huge"] = "too_large"
    assert ran.skipped == expected, (ran.out, ran.err)
    assert ex.metric("airlock_executor_skipped_outputs_total", {"reason": "not_regular"}) - before == 5
    # The executor goes on serving.
    assert run(ex, "print('next')").out == "next\n"


def test_ten_gib_sparse_file_within_fsize_is_never_read(ex: Executor) -> None:
    # The fsize ulimit is the tmpfs size: this call asks for 12 GiB, so the
    # sparse file can be made; it is listed at 10 GiB and never read.
    code = (
        "import signal, os\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "try:\n    os.truncate(os.open('/outputs/huge', os.O_CREAT | os.O_WRONLY), 10 << 30); print('made')\n"
        "except OSError as exc:\n    print('refused', exc.errno)\n"
        "open('/outputs/z-small', 'w').write('s')\n"
    )
    t0 = time.monotonic()
    ran = run(ex, code, artifacts={**OUTPUTS, "max_output_file_bytes": 100 * MiB * 1024}, tmpfs_bytes=12 << 30)
    assert time.monotonic() - t0 < 30
    assert ran.result.outcome == executor_pb2.OUTCOME_OK, ran.err
    assert ran.out == "made\n", ran.err
    assert ran.skipped == {"huge": "too_large"}
    assert ran.files == {"z-small": b"s"}


def test_ten_thousand_files_stop_at_the_count_limit(ex: Executor) -> None:
    code = "for i in range(10000):\n    open(f'/outputs/f{i:05d}', 'w').write(str(i))\nprint('made')"
    t0 = time.monotonic()
    ran = run(ex, code, artifacts={**OUTPUTS, "max_outputs": 5})
    assert time.monotonic() - t0 < 60
    assert ran.out == "made\n", ran.err
    assert len(ran.files) == 5
    assert all(ran.files[name] == str(int(name[1:])).encode() for name in ran.files)
    reasons = [s.reason for s in ran.result.skipped_outputs]
    assert set(reasons) == {"count_limit"}
    # The first ones by name, the rest summed up in one "*".
    assert len(reasons) == 101
    assert ran.result.skipped_outputs[-1].name == "*"
    assert run(ex, "print('next')").out == "next\n"


def test_total_bytes_limit(ex: Executor) -> None:
    code = "for n in 'abc':\n    open(f'/outputs/{n}', 'wb').write(b'x' * (400 << 10))"
    ran = run(ex, code, artifacts={**OUTPUTS, "max_output_bytes": MiB})
    assert len(ran.files) == 2, ran.skipped
    assert list(ran.skipped.values()) == ["total_limit"]


def test_nothing_is_collected_without_max_outputs(ex: Executor) -> None:
    ran = run(ex, "open('/outputs/x', 'w').write('x'); print('ok')", inputs={"i": b"1"}, artifacts={"max_inputs": 1})
    assert ran.out == "ok\n", ran.err
    assert ran.files == {}
    assert list(ran.result.skipped_outputs) == []


@pytest.mark.parametrize(
    ("inputs", "artifacts", "code"),
    [
        ({"a": b"1", "b": b"2"}, {"max_inputs": 1}, "inputs_too_many"),
        ({"a": b"1"}, {}, "inputs_too_many"),
        ({"a": b"x" * 2048}, {"max_inputs": 1, "max_input_bytes": 1024}, "inputs_too_large"),
        ({"a": b"x" * (17 * MiB)}, {"max_inputs": 1}, "inputs_too_large"),
        ({"../etc": b"1"}, {"max_inputs": 1}, "input_name_invalid"),
        ({"bad\nname": b"1"}, {"max_inputs": 1}, "input_name_invalid"),
        ({".": b"1"}, {"max_inputs": 1}, "input_name_invalid"),
    ],
)
def test_inputs_beyond_the_limits_are_refused(
    ex: Executor, inputs: dict[str, bytes], artifacts: dict[str, int], code: str
) -> None:
    before = ex.metric("airlock_executor_refused_runs_total", {"reason": code})
    assert refusal(ex, inputs, artifacts) == code
    assert ex.metric("airlock_executor_refused_runs_total", {"reason": code}) == before + 1


def test_duplicate_input_names_are_refused(ex: Executor) -> None:
    spec = executor_pb2.RunSpec(
        run_id=str(uuid.uuid4()), tool="python", image=IMAGE, argv=["true"],
        artifacts=call_pb2.ArtifactLimits(max_inputs=4),
    )  # fmt: skip
    request = executor_pb2.RunRequest(
        spec=spec, inputs=[executor_pb2.InputFile(name="a", content=b"1"), executor_pb2.InputFile(name="a")]
    )
    with grpc.insecure_channel(f"unix:{ex.socket}") as channel, pytest.raises(grpc.RpcError) as caught:
        list(executor_pb2_grpc.ExecutorServiceStub(channel).Run(request, metadata=ex.md, timeout=60))
    assert str(caught.value.details()).startswith("input_name_duplicate:")


SHOW = "import os; print(sorted(os.listdir('/inputs')), sorted(os.listdir('/outputs')))"


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_session_calls_see_their_own_inputs_and_outputs_only(ex: Executor, runtime: str) -> None:
    s = f"s-{uuid.uuid4().hex[:8]}"
    first = run(ex, SHOW + "\nopen('/outputs/one', 'w').write('1')", inputs={"in1": b"1"},
                artifacts={**OUTPUTS, "max_inputs": 1}, session=s, runtime=runtime)  # fmt: skip
    assert first.out == "['in1'] []\n", first.err
    assert first.files == {"one": b"1"}
    # A call without files: nothing of the first call's is left.
    second = run(ex, SHOW + "\nopen('/outputs/stray', 'w').write('2')", session=s, runtime=runtime)
    assert second.out == "[] []\n", second.err
    assert not second.files
    third = run(ex, SHOW + "\nopen('/outputs/three', 'w').write('3')", inputs={"in3": b"3"},
                artifacts={**OUTPUTS, "max_inputs": 1}, session=s, runtime=runtime)  # fmt: skip
    assert third.out == "['in3'] []\n", third.err
    assert third.files == {"three": b"3"}
    assert first.result.sandbox.sandbox_id == third.result.sandbox.sandbox_id
    with grpc.insecure_channel(f"unix:{ex.socket}") as channel:
        executor_pb2_grpc.ExecutorServiceStub(channel).EndSandboxes(
            executor_pb2.EndSandboxesRequest(principal="p1", session_id=s), metadata=ex.md, timeout=60
        )


def test_a_timed_out_call_still_has_its_outputs_collected(ex: Executor) -> None:
    code = "import time; open('/outputs/partial', 'w').write('p'); time.sleep(60)"
    ran = run(ex, code, artifacts=OUTPUTS, timeout_ms=1500)
    assert ran.result.outcome == executor_pb2.OUTCOME_TIMEOUT, ran.result
    assert ran.files == {"partial": b"p"}


def test_collection_counts_in_the_metrics(ex: Executor) -> None:
    files = ex.metric("airlock_executor_output_files_total")
    inputs = ex.metric("airlock_executor_input_files_total")
    run(ex, "open('/outputs/m', 'w').write('12345')", inputs={"x": b"1"}, artifacts={**OUTPUTS, "max_inputs": 1})
    assert ex.metric("airlock_executor_output_files_total") == files + 1
    assert ex.metric("airlock_executor_input_files_total") == inputs + 1


def test_runc_calls_with_files_work_on_a_pool_miss_and_a_hit(ex: Executor) -> None:
    # A class nobody asked for yet: the first call misses the pool and gets a
    # container made for it; once the pool holds that class, calls claim one.
    code = "print(open('/inputs/i').read()); open('/outputs/o', 'w').write('o')"
    call = {"inputs": {"i": b"in"}, "artifacts": {**OUTPUTS, "max_inputs": 1}, "pids": 61}
    first = run(ex, code, **call)  # type: ignore[arg-type]
    assert (first.out, first.files) == ("in\n", {"o": b"o"}), first.err
    assert not first.result.sandbox.pool_hit
    deadline = time.monotonic() + 30
    while True:
        later = run(ex, code, **call)  # type: ignore[arg-type]
        assert (later.out, later.files) == ("in\n", {"o": b"o"}), later.err
        if later.result.sandbox.pool_hit or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert later.result.sandbox.pool_hit


def test_a_cancelled_call_still_has_its_outputs_collected(ex: Executor) -> None:
    run_id = str(uuid.uuid4())

    def cancel() -> None:
        time.sleep(2)
        with grpc.insecure_channel(f"unix:{ex.socket}") as channel:
            executor_pb2_grpc.ExecutorServiceStub(channel).Cancel(
                executor_pb2.CancelRequest(run_id=run_id), metadata=ex.md, timeout=30
            )

    canceller = threading.Thread(target=cancel)
    canceller.start()
    code = "import time; open('/outputs/before', 'w').write('b'); time.sleep(60)"
    ran = run(ex, code, artifacts=OUTPUTS, run_id=run_id)
    canceller.join()
    assert ran.result.outcome == executor_pb2.OUTCOME_KILLED, ran.result
    assert ran.files == {"before": b"b"}


def test_a_call_granted_egress_gets_a_container_of_its_own_with_files(ex: Executor) -> None:
    code = "import os; print(open('/inputs/i').read(), 'HTTPS_PROXY' in os.environ); open('/outputs/o', 'w').write('e')"
    ran = run(ex, code, inputs={"i": b"in"}, artifacts={**OUTPUTS, "max_inputs": 1}, egress=True)
    assert ran.out == "in True\n", (ran.err, ran.result)
    assert ran.files == {"o": b"e"}
    assert not ran.result.sandbox.pool_hit
    # Its address is free again: the next one gets one too.
    assert run(ex, code, inputs={"i": b"in"}, artifacts={**OUTPUTS, "max_inputs": 1}, egress=True).files == {"o": b"e"}
