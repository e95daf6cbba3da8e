"""The shipped stack's trust domains (issue 10, items 2 and 8), on a real
`airlock up` started as root: every daemon as its own user, each agent with
its own credential and nothing else, OPA answering only the gateway, and
policy reaching OPA only through an operator's signed publish.

Each attack is run as the unprivileged user the issue names (the agent's
user, or uid 65534), never as root."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from helpers import REPO, Stack, auth, new_home, run_as, start_stack, stop_stack, tool_call

from airlock.v1 import gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.skip("trust domains are separated only when the stack starts as root", allow_module_level=True)


@pytest.fixture(scope="module")
def tstack() -> Iterator[tuple[Stack, Path]]:
    home = new_home("trust")
    policies = home.parent / f"{home.name}-policies"
    shutil.copytree(REPO / "policies", policies)
    s = start_stack(home, "--policies", str(policies))
    yield s, policies
    code, out = stop_stack(s)
    assert code == 0, out
    shutil.rmtree(policies, ignore_errors=True)


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _status(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(key)


def test_each_daemon_runs_as_its_own_user(tstack: tuple[Stack, Path]) -> None:
    stack, _ = tstack
    pids = stack.info["pids"]
    assert _uid(pids["gateway"]) == pwd.getpwnam("airlock-gateway").pw_uid
    assert _uid(pids["executor"]) == pwd.getpwnam("airlock-executor").pw_uid
    assert _uid(pids["opa"]) == pwd.getpwnam("airlock-opa").pw_uid
    # The executor keeps CAP_NET_ADMIN and CAP_NET_RAW (bits 12 and 13) for
    # its firewall rules, and nothing else.
    assert int(_status(pids["executor"], "CapEff"), 16) == (1 << 12) | (1 << 13)
    assert int(_status(pids["gateway"], "CapEff"), 16) == 0
    assert int(_status(pids["opa"], "CapEff"), 16) == 0
    assert stack.info["separated"] is True


def test_opa_has_an_empty_environment_and_no_docker_access(tstack: tuple[Stack, Path]) -> None:
    stack, _ = tstack
    pid = stack.info["pids"]["opa"]
    assert Path(f"/proc/{pid}/environ").read_bytes() == b"", "opa.runtime().env has nothing to leak"
    docker_gid = next(g.gr_gid for g in __import__("grp").getgrall() if g.gr_name == "docker")
    assert str(docker_gid) not in _status(pid, "Groups").split()
    probe = run_as("airlock-opa", "import socket; socket.socket(socket.AF_UNIX).connect('/var/run/docker.sock')")
    assert probe.returncode != 0
    assert "PermissionError" in probe.stderr


def test_an_agent_reads_its_own_token_and_nothing_else(tstack: tuple[Stack, Path]) -> None:
    stack, _ = tstack
    layout = stack.layout
    own = run_as("airlock-agent", f"print(open({str(stack.token_file)!r}).read().strip())")
    assert own.returncode == 0, own.stderr
    assert own.stdout.strip() == stack.token
    secrets = [
        layout.agent_token("dev-untrusted"),
        layout.executor_dir / "executor.token",
        layout.gateway_dir / "executor.token",
        layout.gateway_dir / "opa.token",
        layout.audit_signing_key,
        layout.audit_log,
        layout.bundle_signing_key,
        layout.bundle_token,
        layout.opa_bundle_token,
        layout.gateway_dir / "gateway.yaml",
        layout.opa_dir / "authz.rego",
    ]
    for path in secrets:
        assert path.exists(), path
        probe = run_as("airlock-agent", f"open({str(path)!r}, 'rb').read(1)")
        assert probe.returncode != 0, f"the agent user could read {path}"
        assert "PermissionError" in probe.stderr, probe.stderr
    # What it may read: where things are, and the public key to verify the log.
    public = run_as(
        "airlock-agent",
        f"import json; json.load(open({str(layout.stack_file)!r})); open({str(layout.audit_public_key)!r}).read()",
    )
    assert public.returncode == 0, public.stderr


def test_an_agent_cannot_reach_the_executor_even_with_its_token(tstack: tuple[Stack, Path]) -> None:
    stack, _ = tstack
    sock = stack.info["executor_socket"]
    code = f"""
        import grpc, sys
        from airlock.v1 import executor_pb2, executor_pb2_grpc
        ch = grpc.insecure_channel("unix:{sock}")
        stub = executor_pb2_grpc.ExecutorServiceStub(ch)
        md = (("authorization", "Bearer {stack.executor_token}"),)
        try:
            stub.Cancel(executor_pb2.CancelRequest(run_id="x"), metadata=md, timeout=5)
        except grpc.RpcError as exc:
            print("refused", exc.code().name)
        else:
            print("REACHED")
        import socket
        try:
            socket.socket(socket.AF_UNIX).connect("{sock}")
        except PermissionError:
            print("socket: permission denied")
    """
    probe = run_as("airlock-agent", code)
    assert "REACHED" not in probe.stdout, probe.stdout
    assert "refused UNAVAILABLE" in probe.stdout
    assert "socket: permission denied" in probe.stdout


EVIL_MODULE = """package evil

import rego.v1

docker := http.send({"method": "GET", "url": "unix:///var/run/docker.sock/info"})
env := opa.runtime().env
"""


def test_the_reported_opa_attack_fails_for_an_unprivileged_user(tstack: tuple[Stack, Path]) -> None:
    """The attack from the issue, as uid 65534: upload a module outside the
    bundle roots whose http.send reaches the Docker socket. The API socket
    cannot be opened, and the diagnostic port serves no policy API."""
    stack, _ = tstack
    code = f"""
        import json, socket, urllib.request, urllib.error
        try:
            socket.socket(socket.AF_UNIX).connect({stack.info["opa_socket"]!r})
            print("SOCKET OPEN")
        except PermissionError:
            print("socket: permission denied")
        for method, path in (("PUT", "/v1/policies/evil"), ("GET", "/v1/data"), ("POST", "/v1/query")):
            req = urllib.request.Request({stack.info["opa"]!r} + path, data={EVIL_MODULE.encode()!r}, method=method)
            try:
                urllib.request.urlopen(req, timeout=5)
                print("ACCEPTED", method, path)
            except urllib.error.HTTPError as exc:
                print("refused", method, path, exc.code)
    """
    probe = run_as("nobody", code)
    assert "socket: permission denied" in probe.stdout, probe.stdout + probe.stderr
    assert "ACCEPTED" not in probe.stdout, probe.stdout
    assert "SOCKET OPEN" not in probe.stdout, probe.stdout
    assert probe.stdout.count("refused") == 3


def _opa_raw(stack: Stack, method: str, path: str, body: bytes, token: str | None) -> int:
    import http.client  # noqa: PLC0415
    import socket  # noqa: PLC0415

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(stack.info["opa_socket"])

    conn = Conn("opa", timeout=5)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request(method, path, body=body, headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


def test_opa_admits_only_the_gateways_decision_queries(tstack: tuple[Stack, Path]) -> None:
    """Even a process that can open the socket (root, here) gets nothing but
    the decision documents, and only with the gateway's token."""
    stack, _ = tstack
    decide = json.dumps({"input": {}}).encode()
    refused = (401, 403)
    assert _opa_raw(stack, "PUT", "/v1/policies/evil", EVIL_MODULE.encode(), None) in refused
    assert _opa_raw(stack, "PUT", "/v1/policies/evil", EVIL_MODULE.encode(), stack.opa_token) in refused
    assert _opa_raw(stack, "PUT", "/v1/data/airlock/grants", b"{}", stack.opa_token) in refused
    assert _opa_raw(stack, "GET", "/v1/data", b"", stack.opa_token) in refused
    assert _opa_raw(stack, "GET", "/v1/policies", b"", stack.opa_token) in refused
    assert _opa_raw(stack, "POST", "/v1/data/registry", decide, stack.opa_token) in refused
    assert _opa_raw(stack, "POST", "/v1/query", b'{"query": "data"}', stack.opa_token) in refused
    assert _opa_raw(stack, "POST", "/v1/compile", b'{"query": "data"}', stack.opa_token) in refused
    # An agent's gateway token is not the gateway's OPA token.
    assert _opa_raw(stack, "POST", "/v1/data/airlock/decision", decide, stack.token) in refused
    assert _opa_raw(stack, "POST", "/v1/data/airlock/decision", decide, stack.opa_token) == 200
    assert "evil" not in json.dumps(stack.opa_query("airlock/granted_tools", {"principal": {"id": "x"}}))


def _decide(stack: Stack, tool: str = "python") -> gateway_pb2.DecideResponse:
    with grpc.insecure_channel(stack.gateway) as channel:
        return gateway_pb2_grpc.GatewayServiceStub(channel).Decide(
            gateway_pb2.DecideRequest(call=tool_call(tool, '{"code": "print(1)"}')),
            metadata=auth(stack.token),
            timeout=10,
        )


def _publish(stack: Stack, policies: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "airlock.cli",
            "--home",
            str(stack.home),
            "policy",
            "publish",
            "--policies",
            str(policies),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _wait_revision(stack: Stack, want: str, *, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    got = ""
    while time.monotonic() < deadline:
        got = _decide(stack).decision.policy_revision
        if got == want:
            return got
        time.sleep(0.3)
    return got


def test_a_policy_edit_reaches_opa_only_through_an_operators_publish(tstack: tuple[Stack, Path]) -> None:
    stack, policies = tstack
    before = _decide(stack)
    assert before.decision.verdict == 1  # allow
    grants = policies / "airlock" / "grants" / "data.yaml"
    original = grants.read_text()
    try:
        assert "tools: [python, " in original  # the edit below must change something
        grants.write_text(original.replace("tools: [python, ", "tools: [", 1))
        time.sleep(4)  # longer than the --dev watcher would take
        assert _decide(stack).decision.policy_revision == before.decision.policy_revision, "no watcher without --dev"
        # An agent can neither write the published bundle nor read the signing key.
        for path, mode in ((stack.layout.bundle, "ab"), (stack.layout.bundle_signing_key, "rb")):
            probe = run_as("airlock-agent", f"open({str(path)!r}, {mode!r})")
            assert "PermissionError" in probe.stderr, probe.stderr
        published = _publish(stack, policies)
        assert published.returncode == 0, published.stderr
        revision = published.stdout.split("published policy bundle ")[1].split()[0]
        assert _wait_revision(stack, revision) == revision
        assert _decide(stack).decision.verdict == 2, "the published policy denies python now"  # deny
    finally:
        grants.write_text(original)
        restored = _publish(stack, policies)
        assert restored.returncode == 0, restored.stderr
    assert _wait_revision(stack, before.decision.policy_revision) == before.decision.policy_revision


def test_a_policy_using_network_builtins_does_not_publish(tstack: tuple[Stack, Path]) -> None:
    stack, policies = tstack
    before = _decide(stack).decision.policy_revision
    evil = policies / "airlock" / "evil.rego"
    evil.write_text(EVIL_MODULE.replace("package evil", "package airlock.evil"))
    try:
        published = _publish(stack, policies)
        assert published.returncode == 2
        assert "http.send" in published.stderr or "opa.runtime" in published.stderr, published.stderr
    finally:
        evil.unlink()
    time.sleep(3)
    assert _decide(stack).decision.policy_revision == before


def test_airlock_call_as_root_runs_as_the_agent_user(tstack: tuple[Stack, Path], tmp_path: Path) -> None:
    """The quick start never runs an agent as root: `airlock call` drops to
    the principal's user before it reads a credential."""
    stack, _ = tstack
    env = {**os.environ, "AIRLOCK_HOME": str(stack.home)}
    ok = subprocess.run(
        [sys.executable, "-m", "airlock.cli", "call", "python", '{"code": "print(6*7)"}'],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["stdout"] == "42\n"
    # A credential only root can read: unreadable after the drop...
    root_only = tmp_path / "root-only.token"
    root_only.write_text(stack.token)
    root_only.chmod(0o600)
    dropped = subprocess.run(
        [sys.executable, "-m", "airlock.cli", "call", "--token-file", str(root_only), "python", '{"code": "1"}'],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert dropped.returncode == 2
    assert "cannot read" in dropped.stderr or "Permission denied" in dropped.stderr, dropped.stderr
    # ...and readable with the explicit operator flag.
    cli = [sys.executable, "-m", "airlock.cli", "call", "--as-root", "--token-file", str(root_only)]
    kept = subprocess.run(
        [*cli, "python", '{"code": "1"}'],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert kept.returncode == 0, kept.stdout + kept.stderr


def test_a_stale_ready_file_is_never_taken_for_this_run(tmp_path: Path) -> None:
    """A ready file left by an earlier run names a port someone else may
    hold now; `airlock up` waits for the one its own daemon writes."""
    home = new_home("stale")
    gateway_dir = home / "gateway"
    gateway_dir.mkdir(mode=0o700)
    (gateway_dir / "gateway.ready").write_text(json.dumps({"listen": "127.0.0.1:9", "metrics": "x", "pid": 1}))
    stack = start_stack(home)
    try:
        assert stack.gateway != "127.0.0.1:9"
        assert _uid(stack.info["pids"]["gateway"]) == stack.info["gateway_uid"]
    finally:
        code, out = stop_stack(stack)
        assert code == 0, out
        shutil.rmtree(home, ignore_errors=True)


SQUATTER = (
    "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
    " print(s.getsockname()[1], flush=True); c, _ = s.accept(); print('GOT', c.recv(4096), flush=True)"
)


def test_a_client_refuses_a_stack_json_whose_port_someone_else_holds(tmp_path: Path) -> None:
    """A stale stack.json (its stack died) whose gateway port another local
    user took: `airlock call` refuses before it sends the agent's token."""
    home = new_home("squat")
    stack = start_stack(home)
    code, out = stop_stack(stack)
    assert code == 0, out
    info = dict(stack.info)
    squatter = subprocess.Popen(
        [sys.executable, "-c", SQUATTER],
        user=pwd.getpwnam("nobody").pw_uid, group=pwd.getpwnam("nobody").pw_gid, extra_groups=[],
        stdout=subprocess.PIPE, text=True, cwd="/",
    )  # fmt: skip
    try:
        assert squatter.stdout is not None
        port = int(squatter.stdout.readline())
        info["gateway"] = f"127.0.0.1:{port}"
        # The TCP path (a stack.json without agent sockets); with them, the
        # client never uses the port at all (test_agent_sockets.py).
        info["principals"] = {p: {**v, "socket": ""} for p, v in info["principals"].items()}
        (home / "stack.json").write_text(json.dumps(info))
        (home / "stack.json").chmod(0o644)
        proc = subprocess.run(
            [sys.executable, "-m", "airlock.cli", "--home", str(home), "call", "python", '{"code": "1"}'],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "the stack is gone" in proc.stderr
    finally:
        squatter.kill()
        got = squatter.communicate()[0]
        shutil.rmtree(home, ignore_errors=True)
    assert "GOT" not in got, "the squatter received a connection"


SLOW_LORIS = """
import json, select, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
targets, per_target, duration = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
request = b"GET /bundle.tar.gz HTTP/1.1\\r\\nHost: x\\r\\nX-a: " + b"a" * 100000
stats = {t: {"closed": 0, "answered": 0} for t in targets}

def connect(target):
    host, port = target.rsplit(":", 1)
    try:
        return socket.create_connection((host, int(port)), timeout=2)
    except OSError:
        return None

socks = [(t, connect(t)) for t in targets for _ in range(per_target)]
print("started", flush=True)
end, i = time.monotonic() + duration, 0
try:
    while time.monotonic() < end:
        for n, (target, s) in enumerate(socks):
            # One byte a second: far inside the 5 s that each read may take.
            try:
                if s is None:
                    raise OSError
                if select.select([s], [], [], 0)[0]:
                    data = s.recv(65536)
                    stats[target]["answered"] += len(data)
                    if not data:
                        raise OSError
                s.send(request[i : i + 1])
            except OSError:
                stats[target]["closed"] += 1
                if s is not None:
                    s.close()
                socks[n] = (target, connect(target))
        i += 1
        time.sleep(1)
finally:
    print(json.dumps(stats), flush=True)
"""


def _decide_as(stack: Stack, token: str) -> gateway_pb2.DecideResponse:
    with grpc.insecure_channel(stack.gateway) as channel:
        return gateway_pb2_grpc.GatewayServiceStub(channel).Decide(
            gateway_pb2.DecideRequest(call=tool_call("python", '{"code": "print(1)"}')),
            metadata=auth(token),
            timeout=10,
        )


def test_slow_clients_of_an_agent_user_cannot_hold_back_a_revocation_or_blind_metrics(
    tstack: tuple[Stack, Path],
) -> None:
    """The finding: an agent user trickled one byte every 3 s into 16
    connections to the bundle server (and the metrics port), so OPA could
    not fetch a revoking bundle while `airlock policy publish` reported
    success. Now the bundle server closes every uid but OPA's unread, each
    request has one deadline, one uid gets at most 4 slots, and publish
    returns only once OPA decides with the new revision."""
    import urllib.request  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    stack, policies = tstack
    opa_yaml = yaml.safe_load((stack.layout.opa_dir / "opa.yaml").read_text())
    bundle_server = opa_yaml["services"]["airlock"]["url"].removeprefix("http://")
    metrics = {name: stack.info["metrics"][name] for name in ("gateway", "executor")}
    targets = [bundle_server, *(url.split("/")[2] for url in metrics.values())]
    before = _decide_as(stack, stack.untrusted_token)
    assert before.decision.verdict == 1, "dev-untrusted may run python before the revocation"

    pw = pwd.getpwnam("airlock-untrusted")
    attacker = subprocess.Popen(
        [sys.executable, "-c", SLOW_LORIS, json.dumps(targets), "16", "60"],
        user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], cwd="/",
        env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    grants = policies / "airlock" / "grants" / "data.yaml"
    original = grants.read_text()
    try:
        assert attacker.stdout is not None
        assert attacker.stdout.readline().strip() == "started", attacker.stderr
        time.sleep(3)  # past OPA's next poll: every slot the attacker can get is taken
        revoked = original.replace("  untrusted:\n    tools: [python]", "  untrusted:\n    tools: []")
        assert revoked != original, "the grants file no longer has the untrusted profile's line"
        grants.write_text(revoked)
        published = _publish(stack, policies)
        assert published.returncode == 0, published.stdout + published.stderr
        revision = published.stdout.split("published policy bundle ")[1].split()[0]
        # Publish returned: the revocation is already in force.
        after = _decide_as(stack, stack.untrusted_token)
        assert after.decision.policy_revision == revision
        assert after.decision.verdict == 2, "the revoked grant still allows python"
        # Prometheus (root here) still scrapes both metrics endpoints.
        for url in metrics.values():
            with urllib.request.urlopen(url, timeout=5) as resp:
                assert b"# TYPE" in resp.read()
        assert attacker.poll() is None, "the attack was still running"
    finally:
        grants.write_text(original)
        restored = _publish(stack, policies)
        attacker.terminate()
        out, err = attacker.communicate(timeout=30)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert _decide_as(stack, stack.untrusted_token).decision.verdict == 1
    stats = json.loads(out.strip().splitlines()[-1])
    # The bundle server never read a request of the agent user's, nor answered one.
    assert stats[bundle_server]["answered"] == 0, (stats, err)
    assert stats[bundle_server]["closed"] >= 16, (stats, err)
    for target in targets[1:]:
        assert stats[target]["closed"] >= 12, ("beyond 4 per uid, or past the deadline, closed", stats)


def test_the_bundle_server_answers_opa_alone(tstack: tuple[Stack, Path]) -> None:
    """Even with the bundle-server token, no uid but OPA's gets a byte back:
    the connection is closed before anything is read."""
    import yaml  # noqa: PLC0415

    stack, _ = tstack
    url = yaml.safe_load((stack.layout.opa_dir / "opa.yaml").read_text())["services"]["airlock"]["url"]
    token = stack.layout.bundle_token.read_text().strip()
    code = f"""
        import urllib.request
        req = urllib.request.Request({url + "/bundle.tar.gz"!r}, headers={{"Authorization": "Bearer {token}"}})
        try:
            urllib.request.urlopen(req, timeout=5)
            print("SERVED")
        except Exception as exc:
            print("refused", type(exc).__name__)
    """
    for user in ("airlock-untrusted", "airlock-agent", "airlock-gateway", "nobody"):
        probe = run_as(user, code)
        assert "refused" in probe.stdout, (user, probe.stdout, probe.stderr)
    # OPA's uid is served (with the token).
    served = run_as("airlock-opa", code)
    assert "SERVED" in served.stdout, served.stdout + served.stderr
