"""The seccomp profile (deploy/seccomp) on the real Docker engine, applied
through the executor's own container_options: it is active, ordinary tool
workloads still run under it, each denied syscall fails with EPERM, and
Docker's default profile (the comparison) lets ptrace through.

Containers here carry only the label airlock.test=seccomp (not the
executor's managed label, so a running executor's leftover sweep leaves them
alone) and are removed by the tests themselves."""

from __future__ import annotations

import errno
import json
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from airlock.executor._config import ExecutorConfig
from airlock.executor._model import Limits, RunSpec
from airlock.executor._options import DEADLINE_WRAPPER, ceilings, clamp, container_options, load_seccomp_profile

pytestmark = pytest.mark.integration
IMAGE = "airlock/sandbox-python:4"
TEST_LABEL = "airlock.test"


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    c = docker.from_env()
    yield c
    # Belt and braces: every test removes its own container in a finally.
    for leftover in c.containers.list(all=True, filters={"label": f"{TEST_LABEL}=seccomp"}):
        leftover.remove(force=True)
    c.close()


def _options(argv: list[str], *, ours: bool) -> dict[str, Any]:
    cfg = ExecutorConfig(socket="/x", token_file="/y")
    run_id = f"seccomp-test-{uuid.uuid4().hex[:12]}"
    spec = RunSpec(run_id=run_id, tool="seccomp-test", image=IMAGE, argv=tuple(argv))
    opts = container_options(spec, clamp(spec, ceilings(cfg)), cfg, load_seccomp_profile(cfg))
    assert any(o.startswith("seccomp=") for o in opts["security_opt"])
    opts["labels"] = {TEST_LABEL: "seccomp"}
    # The executor attaches for output; here logs are simpler to read.
    opts["log_config"] = {"type": "json-file"}
    if not ours:
        # The comparison: the same hardening, but Docker's default profile.
        opts["security_opt"] = [o for o in opts["security_opt"] if not o.startswith("seccomp=")]
    return opts


def _run(client: docker.DockerClient, argv: list[str], *, ours: bool = True) -> tuple[int, str, str]:
    container = client.containers.create(**_options(argv, ours=ours))
    try:
        container.start()
        code = container.wait(timeout=120)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode()
        err = container.logs(stdout=False, stderr=True).decode()
        return code, out, err
    finally:
        container.remove(force=True)


def _python_json(client: docker.DockerClient, code: str, *, ours: bool = True) -> dict[str, Any]:
    status, out, err = _run(client, ["python3", "-I", "-c", code], ours=ours)
    assert status == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# -- (a) the profile is active --------------------------------------------------------

STATUS = r"""
import json
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
print(json.dumps({k: status[k].strip() for k in ("Seccomp", "Seccomp_filters", "NoNewPrivs")}))
"""


def test_the_profile_is_active(client) -> None:
    status = _python_json(client, STATUS)
    assert status["Seccomp"] == "2"
    assert status["NoNewPrivs"] == "1"


# -- (b) ordinary workloads still run ----------------------------------------------------

PYTHON_WORKLOAD = r"""
import json, multiprocessing, os, socket, subprocess, tempfile, threading, time
import urllib.error, urllib.parse, urllib.request

def square(x):
    return x * x

if __name__ == "__main__":
    r = {}
    r["json"] = json.loads(json.dumps({"a": [1, 2.5, None]}))
    r["urlparse"] = urllib.parse.urlparse("https://example.org/a?b=1").netloc
    try:
        urllib.request.urlopen("http://127.0.0.1:9/", timeout=2)
    except urllib.error.URLError as exc:
        r["urlopen"] = type(exc.reason).__name__
    r["subprocess"] = subprocess.run(["sh", "-c", "echo hi | tr a-z A-Z"], capture_output=True, text=True).stdout
    seen = []
    threads = [threading.Thread(target=seen.append, args=(i,)) for i in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    r["threads"] = sorted(seen)
    with multiprocessing.Pool(2) as pool:
        r["pool"] = pool.map(square, range(6))
    pid = os.fork()
    if pid == 0:
        os.execv("/bin/sh", ["sh", "-c", "exit 7"])
    r["fork_exec"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    t0 = time.monotonic(); time.sleep(0.05)
    r["time"] = [time.time() > 1.6e9, time.monotonic() - t0 >= 0.05, time.process_time() >= 0,
                 time.clock_gettime(time.CLOCK_REALTIME) > 1.6e9, time.strftime("%Y") >= "2024"]
    for folder in ("/tmp", "/work"):
        with tempfile.NamedTemporaryFile("w+", dir=folder) as f:
            f.write("data"); f.flush(); f.seek(0)
            r[f"write{folder}"] = f.read()
    unix_a, unix_b = socket.socketpair()
    unix_a.sendall(b"u"); r["af_unix"] = unix_b.recv(1).decode()
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0)); server.listen()
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept(); client.sendall(b"i"); r["af_inet"] = peer.recv(1).decode()
    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    r["getaddrinfo_localhost"] = bool(socket.getaddrinfo("localhost", 80, proto=socket.IPPROTO_TCP))
    print(json.dumps(r))
"""


def test_python_workloads_run_under_the_profile(client) -> None:
    r = _python_json(client, PYTHON_WORKLOAD)
    assert r["json"] == {"a": [1, 2.5, None]}
    assert r["urlparse"] == "example.org"
    assert r["urlopen"] == "ConnectionRefusedError"
    assert r["subprocess"] == "HI\n"
    assert r["threads"] == list(range(8))
    assert r["pool"] == [0, 1, 4, 9, 16, 25]
    assert r["fork_exec"] == 7
    assert all(r["time"]), r["time"]
    assert (r["write/tmp"], r["write/work"]) == ("data", "data")
    assert (r["af_unix"], r["af_inet"]) == ("u", "i")
    assert r["getaddrinfo_localhost"] is True


SHELL_WORKLOAD = r"""
set -eu
printf 'pear\napple\nfig\napple\n' > /work/fruit
sort /work/fruit | uniq | wc -l
cat /work/fruit | sed -n 's/^a/A/p' | head -1
ls /work /tmp | wc -l >/dev/null
mkdir -p /work/d/e && touch /work/d/e/f && cp -a /work/d /work/d2 && find /work -name f | sort
tar -C /work -czf /tmp/t.tgz d && tar -tzf /tmp/t.tgz | wc -l
awk 'BEGIN { print 6 * 7 }'
echo tmp > /tmp/x && cat /tmp/x
date +%Y >/dev/null && sleep 0.01
"""


def test_shell_pipelines_with_coreutils_run_under_the_profile(client) -> None:
    status, out, err = _run(client, ["sh", "-c", SHELL_WORKLOAD])
    assert status == 0, err
    assert out.split() == ["3", "Apple", "/work/d/e/f", "/work/d2/e/f", "3", "42", "tmp"]


# -- (c) what the profile denies ------------------------------------------------------------

# Each probe runs in one container; a probe's value is 0 on success or the
# errno. x86_64 syscall numbers, called through libc's syscall() so glibc
# adds no fallbacks of its own.
PROBES = r"""
import ctypes, json, os, socket

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def sys(nr, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a & (2**64 - 1)) for a in args))
    if ret == -1:
        return ctypes.get_errno()
    return 0

def in_child(fn):
    # For calls that change the caller (ptrace, clone): the answer comes back as the exit code.
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(fn())
        finally:
            os._exit(255)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

def ptrace_attach():
    child = os.fork()
    if child == 0:
        os.pause()
        os._exit(0)
    try:
        return sys(101, 16, child, 0, 0)  # PTRACE_ATTACH
    finally:
        os.kill(child, 9); os.waitpid(child, 0)

def raw_clone(flags):
    def go():
        ret = libc.syscall(ctypes.c_long(56), ctypes.c_ulong(flags | 17), 0, 0, 0, 0)  # | SIGCHLD
        if ret == 0:
            os._exit(0)  # the new child: leave at once
        if ret > 0:
            os.waitpid(ret, 0)
            return 0
        return ctypes.get_errno()
    return go()

def sock(family, kind, proto=0):
    try:
        socket.socket(family, kind, proto).close()
        return 0
    except OSError as exc:
        return exc.errno

uring_params = ctypes.create_string_buffer(120)
ns_fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
buf = ctypes.create_string_buffer(64)
probes = {
    "ptrace_traceme": in_child(lambda: sys(101, 0, 0, 0, 0)),
    "ptrace_attach": ptrace_attach(),
    "process_vm_readv": sys(310, os.getpid(), 0, 0, 0, 0, 0),
    "process_vm_writev": sys(311, os.getpid(), 0, 0, 0, 0, 0),
    "keyctl": sys(250, 0, -3, 0),  # KEYCTL_GET_KEYRING_ID, session keyring
    "add_key": sys(248, ctypes.addressof(ctypes.create_string_buffer(b"user")),
                   ctypes.addressof(ctypes.create_string_buffer(b"k")), 0, 0, -2),
    "request_key": sys(249, ctypes.addressof(ctypes.create_string_buffer(b"user")),
                       ctypes.addressof(ctypes.create_string_buffer(b"k")), 0, 0),
    "bpf": sys(321, 0, 0, 0),
    "userfaultfd": sys(323, 0),
    "perf_event_open": sys(298, 0, 0, -1, -1, 0),
    "personality_addr_no_randomize": sys(135, 0x0040000),
    "personality_read_implies_exec": sys(135, 0x0400000),
    "personality_linux32": sys(135, 0x0008),
    "unshare_newuser": sys(272, 0x10000000),
    "unshare_newns": sys(272, 0x00020000),
    "setns": sys(308, ns_fd, 0),
    "mount": sys(165, ctypes.addressof(ctypes.create_string_buffer(b"none")),
                 ctypes.addressof(ctypes.create_string_buffer(b"/tmp")),
                 ctypes.addressof(ctypes.create_string_buffer(b"tmpfs")), 0, 0),
    "umount2": sys(166, ctypes.addressof(ctypes.create_string_buffer(b"/tmp")), 0),
    "pivot_root": sys(155, ctypes.addressof(ctypes.create_string_buffer(b"/tmp")),
                      ctypes.addressof(ctypes.create_string_buffer(b"/tmp"))),
    "chroot": sys(161, ctypes.addressof(ctypes.create_string_buffer(b"/tmp"))),
    "clone_newuser": raw_clone(0x10000000),
    "clone_newnet": raw_clone(0x40000000),
    "clone_newns": raw_clone(0x00020000),
    "io_uring_setup": sys(425, 1, ctypes.addressof(uring_params)),
    "kcmp": sys(312, os.getpid(), os.getpid(), 0, 0, 0),
    "pidfd_getfd": sys(438, 0, 0, 0),
    "clock_settime": sys(227, 0, ctypes.addressof(buf)),
    "syslog": sys(103, 10, 0, 0),  # SYSLOG_ACTION_SIZE_BUFFER
    "fanotify_init": sys(300, 0, 0),
    "open_by_handle_at": sys(304, -100, ctypes.addressof(buf), 0),
    "set_mempolicy": sys(238, 0, 0, 0),
    "socket_af_packet": sock(17, socket.SOCK_RAW),
    "socket_af_alg": sock(38, socket.SOCK_SEQPACKET),
    "socket_af_vsock": sock(40, socket.SOCK_STREAM),
    "socket_netlink_audit": sock(16, socket.SOCK_RAW, 9),
}
# Still allowed: the control values.
allowed = {
    "personality_query": sys(135, 0xFFFFFFFF),
    "personality_linux": sys(135, 0),
    "clone_plain": raw_clone(0),
    "socket_netlink_route": sock(16, socket.SOCK_RAW, 0),
    "getpid": sys(39),
}
print(json.dumps({"denied": probes, "allowed": allowed, "clone3": sys(435, 0, 0)}))
"""

DENIED_PROBES = (
    "ptrace_traceme",
    "ptrace_attach",
    "process_vm_readv",
    "process_vm_writev",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "userfaultfd",
    "perf_event_open",
    "personality_addr_no_randomize",
    "personality_read_implies_exec",
    "personality_linux32",
    "unshare_newuser",
    "unshare_newns",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "clone_newuser",
    "clone_newnet",
    "clone_newns",
    "io_uring_setup",
    "kcmp",
    "pidfd_getfd",
    "clock_settime",
    "syslog",
    "fanotify_init",
    "open_by_handle_at",
    "set_mempolicy",
    "socket_af_packet",
    "socket_af_alg",
    "socket_af_vsock",
    "socket_netlink_audit",
)


@pytest.fixture(scope="module")
def probes(client) -> dict[str, Any]:
    return _python_json(client, PROBES)


def test_every_probe_is_checked(probes) -> None:
    assert set(probes["denied"]) == set(DENIED_PROBES)


@pytest.mark.parametrize("probe", DENIED_PROBES)
def test_denied_syscall_fails_with_eperm(probes, probe) -> None:
    got = probes["denied"][probe]
    assert got == errno.EPERM, f"{probe}: {errno.errorcode.get(got, got)}"


def test_the_allowed_forms_of_conditional_syscalls_still_work(probes) -> None:
    assert probes["allowed"] == {
        "personality_query": 0,
        "personality_linux": 0,
        "clone_plain": 0,
        "socket_netlink_route": 0,
        "getpid": 0,
    }


def test_clone3_answers_enosys(probes) -> None:
    assert probes["clone3"] == errno.ENOSYS


# -- (d) stricter than Docker's default ------------------------------------------------------

COMPARISON = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
pid = os.fork()
if pid == 0:
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(101), ctypes.c_ulong(0), 0, 0, 0)  # PTRACE_TRACEME
    os._exit(ctypes.get_errno() if ret == -1 else 0)
traceme = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
seccomp = [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0]
print(json.dumps({"ptrace_traceme": traceme, "seccomp": seccomp}))
"""


def test_dockers_default_profile_allows_ptrace_which_ours_denies(client, probes) -> None:
    # Only ptrace is compared: which of the other ptrace-like calls Docker's
    # default allows depends on the engine's version (20.10 already refuses
    # process_vm_readv without CAP_SYS_PTRACE); ptrace it allows on every
    # kernel since 4.8.
    default = _python_json(client, COMPARISON, ours=False)
    # Docker's default is a filter too, so the difference is the profile.
    assert default["seccomp"] == "2"
    assert default["ptrace_traceme"] == 0
    assert probes["denied"]["ptrace_traceme"] == errno.EPERM


# -- (e) the deadline wrapper runs under the profile ----------------------------------------


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_the_deadline_wrapper_works_under_the_profile(client: docker.DockerClient, runtime: str) -> None:
    """PID 1 of every sandbox is GNU timeout (airlock/executor/_options.py): its
    timer, signals, process group and wait must all be allowed, under runc
    and under gVisor (which applies the profile itself, --oci-seccomp). A
    1 s run of `sleep 60` ends by SIGKILL at 1 s + the wrapper's grace."""
    cfg = ExecutorConfig(socket="/x", token_file="/y", runtimes=("runc", "runsc"))
    spec = RunSpec(
        run_id=f"seccomp-test-{uuid.uuid4().hex[:12]}",
        tool="seccomp-test",
        image=IMAGE,
        argv=("sleep", "60"),
        limits=Limits(timeout_ms=1000),
        runtime=runtime,
    )
    opts = container_options(spec, clamp(spec, ceilings(cfg)), cfg, load_seccomp_profile(cfg))
    assert opts["entrypoint"][0] == DEADLINE_WRAPPER
    opts["labels"] = {TEST_LABEL: "seccomp"}
    opts["log_config"] = {"type": "json-file"}
    container = client.containers.create(**opts)
    try:
        container.start()
        # Generous: a deadline of 3 s, on a loaded machine; `sleep 60` would run for 60.
        code = container.wait(timeout=45)["StatusCode"]
        err = container.logs(stdout=False, stderr=True).decode()
    finally:
        container.remove(force=True)
    assert code == 137, err  # timeout's report of the SIGKILL it sent
    assert "Operation not permitted" not in err
