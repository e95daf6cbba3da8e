"""The desktop sandbox for computer use (issue 16), the executor's side,
against a real executor daemon on real Docker (runc): a desktop session's
container runs ``airlock-desktop 1024x768`` as its keeper (Xvfb and a kiosk
chromium on the image's test page), and each call runs act.py as the sandbox
uid, which does its actions and prints a PNG screenshot in base64.

- the first call returns a 1024x768 PNG of the test page, from a container
  made fresh for the session (never the warm pool);
- a click on the page's button turns its target area red, typed text shows
  in its label area, and the desktop (the same container, the same browser
  state) survives from call to call;
- after every call no process of the sandbox uid is left, while the
  keeper's display and browser run on;
- an invalid action (x outside the display) fails the call with a non-zero
  exit before any action runs;
- a desktop spec with sandbox mode ephemeral is refused (desktop_needs_session),
  and one for gVisor too (runtime_unavailable: chromium does not start there).

One session serves the whole module: the desktop takes seconds to start.
The page's coordinates are in deploy/images/desktop/index.html."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
import yaml
from fixtures.png import Image, decode_png
from helpers import scrape, start_daemon, stop_daemon

from airlock.executor.sandboxes.containers import UID_COUNT_ARGV
from airlock.v1 import call_pb2, executor_pb2, executor_pb2_grpc

pytestmark = pytest.mark.integration
IMAGE = "airlock/sandbox-desktop:5"
ACT = ["python3", "-I", "/usr/local/lib/airlock-desktop/act.py"]
WIDTH, HEIGHT = 1024, 768
SANDBOX_UID = 65534
KEEPER_UID = 65533
MiB = 1 << 20
#: The registry entry's limits (deploy/tool_registry.yaml, tool computer).
LIMITS = {"memory_bytes": 1536 * MiB, "cpu_millis": 1000, "pids": 512, "timeout_ms": 30_000,
          "output_bytes": 4 * MiB, "tmpfs_bytes": 256 * MiB}  # fmt: skip
#: Areas of the test page (x0, y0, x1, y1), away from their edges.
PAINT_BUTTON = (20, 20, 380, 280)
TARGET = (20, 420, 1000, 580)
ECHO = (0, 655, 1024, 755)
RED, WHITE = (255, 0, 0), (255, 255, 255)


@dataclass
class Executor:
    socket: str
    token: str
    metrics: str
    proc: Any

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@dataclass(frozen=True)
class Ran:
    out: str
    err: str
    result: executor_pb2.RunResult
    seconds: float


@pytest.fixture(scope="module")
def ex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executor]:
    client = docker.from_env()
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{IMAGE} is missing: run deploy/images/build-desktop.sh (scripts/bootstrap does)")
    finally:
        client.close()
    folder: Path = tmp_path_factory.mktemp("desktop")
    token_file = folder / "executor.token"
    token_file.write_text(uuid.uuid4().hex * 2)
    token_file.chmod(0o600)
    # The desktop tool alone, with its display: the pool, prewarmed from the
    # registry, must not make (sleeping) containers of its class.
    registry = folder / "tool_registry.yaml"
    registry.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "tools": {
                    "computer": {
                        "description": "the desktop test's tool",
                        "image": IMAGE,
                        "argv": [*ACT, "{actions}"],
                        "display": {"width": WIDTH, "height": HEIGHT, "environment": "browser"},
                        "parameters": {"type": "object", "properties": {"actions": {"type": "array"}}},
                        "limits": {"memory": "1536Mi", "pids": 512, "tmpfs": "256Mi", "output": "4Mi"},
                        "sandbox": {"mode": "session"},
                    }
                },
            }
        )
    )
    config = {
        "socket": str(folder / "run" / "executor.sock"),
        "token_file": str(token_file),
        "metrics_listen": "127.0.0.1:0",
        "registry_file": str(registry),
        "runtimes": ["runc", "runsc"],
        "pool": {"size": 1, "check_interval": "2s"},
        "sessions": {"max_sessions": 4, "max_per_principal": 4},
        "egress": {"enabled": False},
        "limits": {"memory": "1536Mi", "pids": 512, "tmpfs": "256Mi", "output": "4Mi", "timeout": "30s"},
    }
    proc, info = start_daemon("executor", config, folder)
    try:
        yield Executor(info["socket"], token_file.read_text(), info["metrics"], proc)
    finally:
        stop_daemon(proc)


def run(
    ex: Executor,
    actions: list[dict[str, Any]] | str,
    *,
    session: str,
    mode: int = call_pb2.SANDBOX_MODE_SESSION,
    argv: list[str] | None = None,
    runtime: str = "runc",
) -> Ran:
    spec = executor_pb2.RunSpec(
        run_id=str(uuid.uuid4()),
        tool="computer",
        image=IMAGE,
        argv=argv or [*ACT, actions if isinstance(actions, str) else json.dumps(actions)],
        limits=call_pb2.Limits(**LIMITS),
        network=call_pb2.Network(mode=call_pb2.NETWORK_MODE_NONE),
        runtime=runtime,
        principal="p1",
        session_id=session,
        sandbox=call_pb2.Sandbox(mode=mode, desktop=call_pb2.Display(width=WIDTH, height=HEIGHT)),
    )
    out, err = bytearray(), bytearray()
    result = None
    t0 = time.monotonic()
    with grpc.insecure_channel(f"unix:{ex.socket}") as channel:
        stub = executor_pb2_grpc.ExecutorServiceStub(channel)
        for event in stub.Run(executor_pb2.RunRequest(spec=spec), metadata=ex.md, timeout=120):
            which = event.WhichOneof("event")
            if which == "output":
                (out if event.output.stream == executor_pb2.STREAM_STDOUT else err).extend(event.output.data)
            elif which == "result":
                result = event.result
    assert result is not None
    return Ran(out.decode(), err.decode(), result, time.monotonic() - t0)


def screenshot(ran: Ran) -> Image:
    assert ran.result.outcome == executor_pb2.OUTCOME_OK, (ran.result, ran.err[-2000:])
    data = base64.b64decode(ran.out.strip(), validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    assert (width, height) == (WIDTH, HEIGHT)
    return decode_png(data)


def is_red(p: tuple[int, int, int]) -> bool:
    return p[0] > 200 and p[1] < 60 and p[2] < 60


def is_white(p: tuple[int, int, int]) -> bool:
    return min(p) > 240


def is_dark(p: tuple[int, int, int]) -> bool:
    return max(p) < 100


# -- what runs in the container ----------------------------------------------


def processes(container_id: str) -> list[tuple[int, str]]:
    """(uid, command) of every process in the container, from the host's view."""
    client = docker.from_env()
    try:
        top = client.api.top(container_id, ps_args="-eo pid,uid,args")
    finally:
        client.close()
    titles = top["Titles"]
    uid_at, args_at = titles.index("UID"), titles.index("COMMAND")
    return [(int(row[uid_at]), row[args_at]) for row in top["Processes"]]


def assert_only_the_keeper(container_id: str) -> None:
    found = processes(container_id)
    left = [p for p in found if p[0] == SANDBOX_UID]
    assert not left, f"processes of the sandbox uid left after the call: {left}"
    commands = " ".join(args for uid, args in found if uid == KEEPER_UID)
    assert "Xvfb :99" in commands
    assert "chromium" in commands


# -- the tests (in order: one session for the module) ------------------------


SESSION = f"desk-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def first(ex: Executor) -> Ran:
    """The session's first call: starts the desktop."""
    return run(ex, [{"type": "screenshot"}], session=SESSION)


def test_the_first_call_starts_a_fresh_desktop_and_returns_its_screenshot(ex: Executor, first: Ran) -> None:
    image = screenshot(first)
    sandbox = first.result.sandbox
    assert sandbox.mode == call_pb2.SANDBOX_MODE_SESSION
    assert sandbox.session_started
    assert not sandbox.pool_hit, "a desktop never comes from the warm pool"
    print(f"first screenshot (desktop start included): {first.seconds:.2f} s")
    # The test page as it loads: the target area white, the label empty.
    hits, total = image.count(TARGET, is_white)
    assert hits == total, "the target area starts white"
    hits, total = image.count(PAINT_BUTTON, lambda p: p[2] > 200 and p[0] < 60)
    assert hits > total * 0.8, "the paint button is blue"
    inspect = docker.from_env().api.inspect_container(sandbox.container_id)
    assert inspect["Config"]["Cmd"][-2:] == ["airlock-desktop", f"{WIDTH}x{HEIGHT}"]
    host = inspect["HostConfig"]
    assert host["ReadonlyRootfs"]
    assert host["CapDrop"] == ["ALL"]
    assert host["NetworkMode"] == "none"
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert any(opt.startswith("seccomp=") for opt in host["SecurityOpt"])
    assert_only_the_keeper(sandbox.container_id)


def test_a_click_paints_the_target_red_and_the_desktop_survives(ex: Executor, first: Ran) -> None:
    ran = run(ex, [{"type": "click", "x": 200, "y": 150, "button": "left"}], session=SESSION)
    image = screenshot(ran)
    print(f"click + screenshot round trip: {ran.seconds:.2f} s")
    assert ran.result.sandbox.container_id == first.result.sandbox.container_id
    assert not ran.result.sandbox.session_started
    hits, total = image.count(TARGET, is_red)
    assert hits == total, f"only {hits} of {total} sampled target pixels are red"
    assert_only_the_keeper(ran.result.sandbox.container_id)


def test_typed_text_shows_in_the_label_area(ex: Executor, first: Ran) -> None:
    before = screenshot(run(ex, [{"type": "screenshot"}], session=SESSION))
    dark_before, _ = before.count(ECHO, is_dark, step=2)
    ran = run(
        ex,
        [{"type": "click", "x": 700, "y": 75}, {"type": "type", "text": "HELLO airlock"},
         {"type": "keypress", "keys": ["SHIFT", "1"]}],
        session=SESSION,
    )  # fmt: skip
    image = screenshot(ran)
    print(f"click + type + keypress + screenshot round trip: {ran.seconds:.2f} s")
    dark_after, total = image.count(ECHO, is_dark, step=2)
    assert dark_before == 0
    assert dark_after > total * 0.02, f"only {dark_after} dark pixels in the label area"
    # The earlier click's effect is still there: the same browser, the same page.
    hits, total = image.count(TARGET, is_red)
    assert hits == total
    assert_only_the_keeper(ran.result.sandbox.container_id)


def test_a_click_with_held_keys_and_a_second_click_on_one_spot(ex: Executor, first: Ran) -> None:
    # A SHIFT-held click (the SDK's `keys`: act.py used to refuse the field),
    # then a plain click on the same spot (it used to wait 16 s for the
    # pointer to move: mousemove --sync; bench_computer.py shows the time).
    held = run(ex, [{"type": "click", "x": 700, "y": 75, "keys": ["SHIFT"]}], session=SESSION)
    assert held.result.outcome == executor_pb2.OUTCOME_OK, held.err[-500:]
    again = run(ex, [{"type": "click", "x": 700, "y": 75}], session=SESSION)
    assert again.result.outcome == executor_pb2.OUTCOME_OK, again.err[-500:]
    print(f"second click on one spot: {again.seconds:.2f} s")
    where = run(ex, "", session=SESSION, argv=["sh", "-c", "DISPLAY=:99 xdotool getmouselocation"])
    assert where.result.outcome == executor_pb2.OUTCOME_OK, where.err[-500:]
    assert "x:700 y:75" in where.out


def test_an_invalid_action_fails_before_any_action_runs(ex: Executor, first: Ran) -> None:
    # The first action would type into the focused input; the second is
    # outside the display: neither may run.
    before = screenshot(run(ex, [{"type": "screenshot"}], session=SESSION))
    ran = run(
        ex,
        [{"type": "type", "text": "XXXXXXXX"}, {"type": "click", "x": WIDTH, "y": 10}],
        session=SESSION,
    )
    assert ran.result.outcome == executor_pb2.OUTCOME_NONZERO_EXIT
    assert ran.result.exit_code == 2
    assert "invalid: action 1" in ran.err
    assert ran.out == ""
    after = screenshot(run(ex, [{"type": "screenshot"}], session=SESSION))
    # (Not the whole screen: the input's caret blinks.)
    assert after.rows[ECHO[1] : ECHO[3]] == before.rows[ECHO[1] : ECHO[3]], "the label changed: an action ran"
    for bad in ('[{"type": "keypress", "keys": ["NOSUCHKEY"]}]', '{"type": "wait"}', "not json",
                '[{"type": "click", "x": 1, "y": 1, "extra": 1}]', '[{"type": "move", "x": -1, "y": 0}]'):  # fmt: skip
        ran = run(ex, bad, session=SESSION)
        assert ran.result.outcome == executor_pb2.OUTCOME_NONZERO_EXIT, (bad, ran.err)
        assert ran.out == ""
    assert_only_the_keeper(ran.result.sandbox.container_id)


def test_a_call_that_leaves_processes_behind_leaves_none(ex: Executor, first: Ran) -> None:
    """A call that is not act.py (the executor runs any argv of an allowed
    image) starts a detached process; it does not outlive the call, and the
    desktop does."""
    spawn = "import subprocess; subprocess.Popen(['sleep', '1000'], start_new_session=True); print('spawned')"
    result = run(ex, "", session=SESSION, argv=["python3", "-I", "-c", spawn]).result
    assert result.outcome == executor_pb2.OUTCOME_OK
    assert result.sandbox.container_id == first.result.sandbox.container_id
    assert_only_the_keeper(result.sandbox.container_id)
    assert screenshot(run(ex, [{"type": "screenshot"}], session=SESSION)).count(TARGET, is_red)[0] > 0


def test_a_desktop_in_an_ephemeral_sandbox_is_refused(ex: Executor) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        run(ex, [{"type": "screenshot"}], session="", mode=call_pb2.SANDBOX_MODE_EPHEMERAL)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert str(caught.value.details()).startswith("desktop_needs_session:")
    assert scrape(ex.metrics, "airlock_executor_refused_runs_total", {"reason": "desktop_needs_session"}) >= 1


def test_a_desktop_under_gvisor_is_refused(ex: Executor) -> None:
    """Chromium does not start under Debian 12's runsc (docs/computer-use.md)."""
    with pytest.raises(grpc.RpcError) as caught:
        run(ex, [{"type": "screenshot"}], session=f"{SESSION}-gvisor", runtime="runsc")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert str(caught.value.details()).startswith("runtime_unavailable:")


def test_the_count_after_a_call_sees_processes_of_the_sandbox_uid(ex: Executor, first: Ran) -> None:
    """The executor's check (UID_COUNT_ARGV, run as the keeper uid) counts a
    live process of the sandbox uid, and none of the keeper's."""
    container_id = first.result.sandbox.container_id
    client = docker.from_env()
    try:
        container = client.containers.get(container_id)
        keeper, sandbox = f"{KEEPER_UID}:{KEEPER_UID}", f"{SANDBOX_UID}:{SANDBOX_UID}"
        argv = [*UID_COUNT_ARGV, str(SANDBOX_UID)]
        assert container.exec_run(argv, user=keeper).output.strip() == b"0"
        container.exec_run(["sleep", "60"], user=sandbox, detach=True)
        deadline = time.monotonic() + 10
        while (count := container.exec_run(argv, user=keeper).output.strip()) == b"0":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert count == b"1"
        container.exec_run(["/bin/sh", "-c", "kill -9 -1"], user=sandbox)
    finally:
        client.close()
    # The next call's prelude would sweep it anyway; the desktop is untouched.
    ran = run(ex, [{"type": "screenshot"}], session=SESSION)
    assert ran.result.sandbox.container_id == container_id
    assert_only_the_keeper(container_id)
