"""The Docker Compose deployment (deploy/compose), run as a platform engineer
would: build the images (deploy/images/build.sh), write the mounted files
(`airlock deploy compose-init`), `docker compose up --wait`, run the agent
inside its container against a scripted Responses server (the real openai
SDK), see an allowed call run in a sandbox and a denied call refused, scrape
all three /metrics through the project's own Prometheus, put and get an
artifact through the gateway from the agent container (the store is a
volume only the gateway mounts), check what the agent container can and
cannot reach, verify the audit log with the public key alone, `docker
compose down`, and find nothing left behind. Then each misconfiguration the
issue names makes its container fail closed with one clear log line. And the
deployment pins its sandbox images: a retagged image is refused by the
deployed executor (image_mismatch), and `airlock deploy rescan` re-signs the
bundle with Trivy's findings, which the deployed policy then denies."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures import trivydb
from fixtures.responses import fcall, message
from fixtures.responses_server import ScriptedResponses, serving

from airlock.cli._images import registry_images
from airlock.gateway._config import ArtifactS3Config, ArtifactsConfig, load_gateway_config

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "deploy" / "compose" / "compose.yaml"
AIRLOCK = [str(REPO / ".venv" / "bin" / "airlock")]
IMAGES = ("gateway", "executor", "opa", "agent", "prometheus")
UIDS = {"gateway": "10001", "executor": "10002", "opa": "10003", "agent": "10004", "prometheus": "10005"}
UP_TIMEOUT_S = 180
#: How long a misconfigured container has to say what is wrong.
FAULT_WINDOW_S = 60.0
#: The gateway's artifact store: the `artifacts` volume, in the gateway container alone.
ARTIFACTS = "/var/lib/airlock/artifacts"
#: `airlock artifacts` in the agent container, as the agent: its token, the gateway on loopback.
AGENT_ARTIFACTS = "airlock artifacts {} --gateway 127.0.0.1:50051 --token-file /etc/airlock/agent/agent.token"


def _run(argv: list[str], *, timeout: float = 600, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    """deploy/images/build.sh: one line per image with its id and size."""
    out = _run([str(REPO / "deploy" / "images" / "build.sh"), "--quiet"], timeout=1500).stdout
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    found = {}
    for name in IMAGES:
        (tag,) = [t for t in lines if t.startswith(f"airlock/{name}:")]
        _, image_id, size, unit = lines[tag].split()
        assert image_id.startswith("sha256:"), lines[tag]
        assert float(size) > 0, lines[tag]
        assert unit == "MB"
        found[name] = tag
    return found


class Project:
    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.state = root / "state"
        self.env_file = root / ".env"
        self.prometheus_port = _free_port()

    def init(self, *extra: str) -> subprocess.CompletedProcess[str]:
        done = _run(
            [*AIRLOCK, "deploy", "compose-init", "--state", str(self.state), "--env-file", str(self.env_file), *extra]
        )
        with self.env_file.open("a", encoding="utf-8") as f:
            f.write(f"AIRLOCK_PROMETHEUS_PORT={self.prometheus_port}\n")
        return done

    def compose(self, *args: str, check: bool = True, timeout: float = 300, files: tuple[Path, ...] = ()) -> Any:
        argv = ["docker", "compose", "-p", self.name, "-f", str(COMPOSE_FILE)]
        for extra in files:
            argv += ["-f", str(extra)]
        argv += ["--env-file", str(self.env_file), *args]
        return _run(argv, check=check, timeout=timeout)

    def container(self, service: str) -> dict[str, Any]:
        ids = self.compose("ps", "-a", "-q", service).stdout.split()
        assert ids, f"no {service} container"
        return dict(json.loads(_run(["docker", "inspect", ids[0]]).stdout)[0])

    def logs(self, service: str) -> str:
        return str(self.compose("logs", "--no-color", service, check=False).stdout)

    def down(self) -> None:
        self.compose("down", "-v", "--timeout", "30", check=False, timeout=120)


@pytest.fixture
def project(tmp_path: Path, built: dict[str, str]) -> Iterator[Project]:
    del built
    p = Project(tmp_path, f"airlock-test-{uuid.uuid4().hex[:8]}")
    p.init()
    try:
        yield p
    finally:
        p.down()


def _agent_network_gateway(p: Project) -> str:
    """The host's address on the project's agent network: the scripted model
    server listens there, so only containers of this project reach it."""
    out = _run(["docker", "network", "inspect", f"{p.name}_agent", "-f", "{{(index .IPAM.Config 0).Gateway}}"])
    return out.stdout.strip()


def _prometheus(p: Project, path: str) -> Any:
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(f"http://127.0.0.1:{p.prometheus_port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def _targets_up(p: Project, deadline_s: float = 60.0) -> dict[str, str]:
    health: dict[str, str] = {}
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            data = _prometheus(p, "/api/v1/targets")
            health = {t["labels"]["job"]: t["health"] for t in data["data"]["activeTargets"]}
        except OSError:
            health = {}
        if health and all(h == "up" for h in health.values()) and len(health) == 3:
            return health
        time.sleep(1)
    return health


def test_images_run_as_non_root_with_labels_and_healthchecks(built: dict[str, str]) -> None:
    revision = _run(["git", "-C", str(REPO), "rev-parse", "HEAD"]).stdout.strip()
    for name, tag in built.items():
        info = json.loads(_run(["docker", "image", "inspect", tag]).stdout)[0]["Config"]
        user = info["User"]
        assert user.split(":")[0] == UIDS[name], (name, user)
        labels = info["Labels"]
        assert labels["org.opencontainers.image.version"] == tag.split(":")[1]
        assert labels["org.opencontainers.image.revision"].startswith(revision), labels
        if name != "agent":
            assert info.get("Healthcheck", {}).get("Test"), f"{name} has no healthcheck"


def test_compose_end_to_end(project: Project) -> None:  # noqa: PLR0915 - one deployment, checked from end to end
    p = project
    p.compose("up", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 60)
    # Every container but the agent example is read-only and drops all capabilities.
    for service in ("gateway", "opa", "executor", "bundles", "prometheus", "agent"):
        host = p.container(service)["HostConfig"]
        assert host["ReadonlyRootfs"] is True, service
        assert host["CapDrop"] == ["ALL"], service
        assert not host.get("CapAdd"), service
        assert not host.get("Privileged"), service
    gw_ip = _agent_network_gateway(p)
    script = ScriptedResponses(
        [
            [fcall("call_py", "python", '{"code": "print(6*7)"}')],
            [fcall("call_rm", "shell", '{"command": "rm -rf /"}')],
            [message("6*7 is 42.")],
        ]
    )
    with serving(script, host=gw_ip):
        run = p.compose(
            "exec",
            "-T",
            "-e",
            f"OPENAI_BASE_URL=http://{gw_ip}:{script.port}/v1",
            "-e",
            "OPENAI_API_KEY=sk-test",
            "agent",
            "python",
            "-m",
            "airlock.agent",
            "run",
            "what is 6*7?",
            "--model",
            "test-model",
            timeout=180,
        )
    out = run.stdout
    assert "python(" in out
    assert "ALLOW" in out
    assert "DENY argument_denied" in out
    assert "6*7 is 42." in out
    # The allowed call's output went back to the model: it ran in a sandbox.
    outputs = [
        item
        for body in script.requests
        for item in body.get("input", [])
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    ]
    by_call = {o["call_id"]: o["output"] for o in outputs}
    assert "42" in by_call["call_py"]
    assert "argument_denied" in by_call["call_rm"]

    # Prometheus in the project scrapes the gateway, OPA and the executor.
    health = _targets_up(p)
    assert health == {"airlock-gateway": "up", "opa": "up", "airlock-executor": "up"}, health
    rules = _prometheus(p, "/api/v1/rules")["data"]["groups"]
    assert any(r["name"] == "AirlockAuditSeqWentBackwards" for g in rules for r in g["rules"])
    # Scraped every 5 s: the two decisions show within a few scrapes.
    decided = 0.0
    deadline = time.monotonic() + 30
    while decided < 2 and time.monotonic() < deadline:
        result = _prometheus(p, "/api/v1/query?query=sum(airlock_gateway_decisions_total)")["data"]["result"]
        decided = float(result[0]["value"][1]) if result else 0.0
        time.sleep(1)
    assert decided >= 2

    # The agent holds its token and nothing else.
    probe = p.compose(
        "exec",
        "-T",
        "agent",
        "python",
        "-c",
        "import json, os, urllib.request, urllib.error\n"
        "out = {'mounts': [d for d in ('/run/airlock/opa', '/run/airlock/executor', '/var/lib/airlock/audit',"
        f" '{ARTIFACTS}', '/etc/airlock/gateway', '/var/run/docker.sock') if os.path.exists(d)],"
        " 'store': os.path.exists('/var/lib/airlock'),"
        " 'agent_files': sorted(os.listdir('/etc/airlock/agent'))}\n"
        "for name, url in (('opa', 'http://opa:8282/v1/data/airlock/decision'),"
        " ('opa_local', 'http://127.0.0.1:8282/v1/data/airlock/decision'),"
        " ('bundles', 'http://bundles:8181/bundle.tar.gz')):\n"
        "    try:\n"
        "        urllib.request.urlopen(urllib.request.Request(url, data=b'{}', method='POST'), timeout=5)\n"
        "        out[name] = 200\n"
        "    except urllib.error.HTTPError as e:\n"
        "        out[name] = e.code\n"
        "    except OSError as e:\n"
        "        out[name] = 'unreachable'\n"
        "print(json.dumps(out))\n",
    )
    seen = json.loads(probe.stdout)
    assert seen["mounts"] == []
    assert seen["store"] is False
    assert seen["agent_files"] == ["agent.token"]
    # OPA and its bundle server are on a network the agent is not on: no
    # address to hold, nothing to ask.
    assert seen["opa"] == "unreachable"
    assert seen["opa_local"] == "unreachable"
    assert seen["bundles"] == "unreachable"

    _artifact_round_trip(p)

    # The audit log verifies with the public key alone.
    audit = p.root / "audit"
    audit.mkdir()
    p.compose("cp", "gateway:/var/lib/airlock/audit/.", str(audit))
    logs = sorted(audit.glob("audit*.jsonl"))
    assert logs
    verify = _run(
        [*AIRLOCK, "audit", "verify", "--public-key", str(p.state / "audit-public.pem"), str(audit / "audit.jsonl")],
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # The put and the get are audit events of their own.
    events = [json.loads(line) for line in (audit / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert "artifact" in json.dumps(events)

    executor_instance = p.container("executor")["Config"]["Env"]
    assert any(e.startswith("AIRLOCK_EXECUTOR_INSTANCE=compose-") for e in executor_instance)
    p.compose("down", "-v", "--timeout", "30", timeout=120)
    left = _run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={p.name}"]).stdout.split()
    assert left == []
    # The executor removed its sandboxes (pool included) before it stopped.
    sandboxes = _run(
        ["docker", "ps", "-a", "--filter", "label=airlock.managed=true", "--format", "{{.ID}} {{.Labels}}"]
    ).stdout
    assert p.name not in sandboxes


def _artifact_round_trip(p: Project) -> None:
    """The agent puts and gets an artifact through the gateway's API with its
    token; the store is in the gateway's volume (uid 10001, 0700), and no
    other container mounts that volume."""
    content = "a,b\n1,2\n"
    put = p.compose(
        "exec", "-T", "agent", "sh", "-c",
        f"printf 'a,b\\n1,2\\n' > /tmp/data.csv && exec {AGENT_ARTIFACTS.format('put')} /tmp/data.csv"
        " --session s1 --media-type text/csv",
    )  # fmt: skip
    answer = json.loads(put.stdout)
    assert answer["decision"] == "allow", answer
    ref = answer["artifact"]
    assert ref["name"] == "data.csv"
    assert ref["size"] == len(content)
    got = p.compose(
        "exec", "-T", "agent", "sh", "-c",
        f"{AGENT_ARTIFACTS.format('get')} {ref['id']} -o /tmp/back.csv >/dev/null && cat /tmp/back.csv",
    )  # fmt: skip
    assert got.stdout == content
    listed = p.compose("exec", "-T", "agent", "sh", "-c", AGENT_ARTIFACTS.format("ls") + " --session s1")
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [ref["id"]]

    # In the gateway's container: the volume keeps its image's owner and mode,
    # and holds the database and the content-addressed blob.
    stat = p.compose(
        "exec", "-T", "gateway", "python", "-c",
        "import glob, json, os, sys\n"
        f"root, sha = {ARTIFACTS!r}, sys.argv[1]\n"
        "st = os.stat(root)\n"
        # blobs/<owner digest>/sha256/ab/cd/<hex>: per principal.
        "blobs = glob.glob(os.path.join(root, 'blobs', '*', 'sha256', sha[:2], sha[2:4], sha))\n"
        "print(json.dumps({'uid': st.st_uid, 'mode': oct(st.st_mode & 0o7777),"
        " 'db': os.path.exists(os.path.join(root, 'artifacts.sqlite3')), 'blob': len(blobs) == 1}))\n",
        ref["sha256"],
    )  # fmt: skip
    assert json.loads(stat.stdout) == {"uid": 10001, "mode": "0o700", "db": True, "blob": True}
    volume = f"{p.name}_artifacts"
    mounted_by = sorted(
        service
        for service in ("agent", "gateway", "opa", "bundles", "executor", "prometheus")
        if any(m.get("Name") == volume for m in p.container(service)["Mounts"])
    )
    assert mounted_by == ["gateway"]


def _wrong_opa_token(p: Project) -> None:
    path = p.state / "gateway" / "opa.token"
    path.chmod(0o600)
    path.write_text("not-the-token-opa-knows-000000000\n", encoding="utf-8")


def _bundle_signed_with_another_key(p: Project) -> None:
    other = p.root / "other-signing.pem"
    _run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(other)])
    bundle = p.state / "bundles" / "bundle.tar.gz"
    _run([*AIRLOCK, "policy", "build", "--signing-key", str(other), "--out", str(bundle)])
    os.chown(bundle, 10006, 10006)


def _executor_token_missing(p: Project) -> None:
    (p.state / "executor" / "executor.token").unlink()


def _executor_socket_folder_of_another_owner(p: Project) -> None:
    # Not empty: Docker copies the image's folder (owner and mode included)
    # only into an empty volume.
    volume = f"{p.name}_executor-socket"
    _run(["docker", "volume", "create", "--label", f"com.docker.compose.project={p.name}",
          "--label", "com.docker.compose.volume=executor-socket", volume])  # fmt: skip
    _run(["docker", "run", "--rm", "--network", "none", "-v", f"{volume}:/v", "airlock/base:1",
          "sh", "-c", "touch /v/left-over && chown 0:0 /v && chmod 0755 /v"])  # fmt: skip


def _gateway_cannot_reach_opa(p: Project) -> Path:
    override = p.root / "override.yaml"
    override.write_text(
        "services:\n  gateway:\n    environment:\n      AIRLOCK_GATEWAY_OPA__URL: unix:///run/airlock/opa/missing.sock\n",
        encoding="utf-8",
    )
    return override


FAULTS = {
    # name: (break it, the service that must fail closed, what its log says)
    "wrong_opa_token": (_wrong_opa_token, "gateway", "policy engine unreachable"),
    "bundle_wrong_key": (_bundle_signed_with_another_key, "opa", "verification"),
    "executor_token_missing": (_executor_token_missing, "executor", "executor token file"),
    "executor_socket_owner": (_executor_socket_folder_of_another_owner, "executor", "socket folder must be mode 2750"),
    "gateway_without_opa": (_gateway_cannot_reach_opa, "gateway", "policy engine unreachable"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_misconfigured_container_fails_closed_with_one_clear_line(project: Project, fault: str) -> None:
    p = project
    breaker, service, line = FAULTS[fault]
    override = breaker(p)
    files = (override,) if isinstance(override, Path) else ()
    # The service and what it needs (the gateway waits for a healthy OPA and executor).
    needs = {"gateway": (), "opa": ("bundles",), "executor": ()}[service]
    p.compose("up", "-d", *(("--no-deps", service, *needs) if service != "gateway" else ()), files=files, timeout=240)
    deadline = time.monotonic() + FAULT_WINDOW_S
    logs = ""
    while time.monotonic() < deadline:
        logs = p.logs(service)
        if line in logs:
            break
        time.sleep(1)
    assert line in logs, f"{service} did not say {line!r}:\n{logs[-3000:]}"
    state = p.container(service)["State"]
    health = (state.get("Health") or {}).get("Status")
    assert health != "healthy", state
    # One clear line, not a traceback.
    assert "Traceback" not in logs, logs[-3000:]
    if service == "gateway":
        # It serves (every call denied) but its healthcheck fails, every
        # time, saying why: `up --wait` would refuse the deployment.
        checks: list[dict[str, Any]] = []
        deadline = time.monotonic() + FAULT_WINDOW_S
        while len(checks) < 2 and time.monotonic() < deadline:
            time.sleep(2)
            checks = (p.container(service)["State"].get("Health") or {}).get("Log") or []
        assert len(checks) >= 2, checks
        for check in checks:
            assert check["ExitCode"] == 1, check
            assert "airlock_gateway_policy_engine_up is 0" in check["Output"], check
        assert p.container(service)["State"]["Health"]["Status"] != "healthy"


def _bundle_data(p: Project) -> dict[str, Any]:
    """The data document of the signed bundle compose-init or a rescan wrote."""
    import tarfile  # noqa: PLC0415

    with tarfile.open(p.state / "bundles" / "bundle.tar.gz") as tar:
        member = tar.extractfile("/data.json")
        assert member is not None
        doc: dict[str, Any] = json.loads(member.read())
    return doc


def test_compose_init_files_belong_to_their_containers(tmp_path: Path) -> None:
    p = Project(tmp_path, "unused")
    first = p.init()
    owners = {
        "agent/agent.token": 10004,
        "gateway/opa.token": 10001,
        "gateway/audit-signing.pem": 10001,
        "gateway/executor.token": 10001,
        "executor/executor.token": 10002,
        "opa/authz.rego": 10003,
        "opa/bundle.token": 10003,
        "bundles/bundle.token": 10006,
        "operator/bundle-signing.pem": 0,
    }
    for rel, uid in owners.items():
        st = (p.state / rel).stat()
        assert st.st_uid == uid, rel
        assert st.st_mode & 0o077 == 0, rel
    # The agent's folder holds its token only; nobody else's folder is readable by others.
    assert sorted(f.name for f in (p.state / "agent").iterdir()) == ["agent.token"]
    for folder in ("gateway", "executor", "opa", "bundles", "operator", "agent"):
        assert (p.state / folder).stat().st_mode & 0o077 == 0, folder
    # The OPA authorization policy holds a digest of the gateway's token, never the token.
    token = (p.state / "gateway" / "opa.token").read_text().strip()
    assert token not in (p.state / "opa" / "authz.rego").read_text()
    # The gateway has `airlock up`'s artifact store: local, default quotas and
    # retention, in the volume only it mounts.
    gateway_yaml = p.state / "gateway" / "gateway.yaml"
    assert yaml.safe_load(gateway_yaml.read_text(encoding="utf-8"))["artifacts"]["path"] == ARTIFACTS
    cfg = load_gateway_config(gateway_yaml)
    assert cfg.artifacts == ArtifactsConfig(backend="local", path=ARTIFACTS)
    # The README's S3 variant: environment overrides and a credentials file
    # in the gateway's own folder make a config the gateway accepts.
    s3 = load_gateway_config(gateway_yaml, env=_readme_s3_environment())
    assert s3.artifacts == ArtifactsConfig(
        backend="s3",
        path=ARTIFACTS,
        s3=ArtifactS3Config(
            endpoint_url="https://s3.eu-central-1.amazonaws.com",
            bucket="my-airlock-artifacts",
            prefix="airlock",
            region="eu-central-1",
            credentials_file="/etc/airlock/gateway/s3-credentials.yaml",
        ),
    )
    # The registry's images are pinned by the ids the executor's engine has:
    # in the gateway's folder (its input.image, the digest it sends) and in
    # the signed bundle (data.images); an image the engine lacks is named.
    pins_file = p.state / "gateway" / "images.json"
    assert pins_file.stat().st_uid == 10001
    assert pins_file.stat().st_mode & 0o077 == 0
    pins = json.loads(pins_file.read_text(encoding="utf-8"))
    for ref in registry_images(REPO / "deploy" / "tool_registry.yaml"):
        found = _run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], check=False)
        if found.returncode == 0:
            assert pins[ref]["digest"] == found.stdout.strip(), ref
        else:
            assert ref not in pins
            assert f"not pinned {ref}: not on the engine" in first.stderr
    assert _bundle_data(p)["images"] == pins
    # A second run keeps the secrets (a restart must not lock out running agents).
    before = (p.state / "agent" / "agent.token").read_bytes()
    p.init()
    assert (p.state / "agent" / "agent.token").read_bytes() == before
    shutil.rmtree(p.state)


def _readme_s3_environment() -> dict[str, str]:
    """The gateway's environment of the S3 override in deploy/compose/README.md."""
    readme = (REPO / "deploy" / "compose" / "README.md").read_text(encoding="utf-8")
    block = readme.split("# compose.s3.yaml:", 1)[1].split("\n", 1)[1].split("```", 1)[0]
    env: dict[str, str] = yaml.safe_load(block)["services"]["gateway"]["environment"]
    assert set(env) >= {"AIRLOCK_GATEWAY_ARTIFACTS__BACKEND", "AIRLOCK_GATEWAY_ARTIFACTS__S3__CREDENTIALS_FILE"}
    return env


def test_only_the_gateway_mounts_the_artifact_store() -> None:
    """The compose file as written: the `artifacts` volume is the gateway's
    (at the path its image owns), and no other service mounts it."""
    services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    mounts = {
        name: [v.split(":")[1] for v in svc.get("volumes", []) if v.split(":")[0] == "artifacts"]
        for name, svc in services.items()
    }
    assert {name: m for name, m in mounts.items() if m} == {"gateway": [ARTIFACTS]}
    dockerfile = (REPO / "deploy" / "images" / "Dockerfile.daemon").read_text(encoding="utf-8")
    assert ARTIFACTS in dockerfile


# -- pinned images in the deployment ---------------------------------------------

#: The tool's image in the pinning test: the sandbox image under the test's own
#: name, so retagging it disturbs nothing else on the engine.
PIN_IMAGE = "airlock-test/compose-pin:1"
SANDBOX = "airlock/sandbox-python:4"
#: One python call from the agent container, as the agent (its token, the
#: gateway on loopback), with the client library the agent image installs.
AGENT_CALL = (
    "import json, uuid\n"
    "from airlock.common import wire\n"
    "from airlock.common.client import GatewayClient\n"
    "from airlock.v1 import call_pb2\n"
    "token = open('/etc/airlock/agent/agent.token').read().strip()\n"
    "call = call_pb2.ToolCall(call_id='call_' + uuid.uuid4().hex[:24], tool='python',\n"
    "    item_type=wire.ITEM_TYPE_NUMBERS['function_call'], arguments=json.dumps({'code': 'print(6*7)'}))\n"
    "r = GatewayClient('127.0.0.1:50051', token, timeout_s=60).invoke_call(call)\n"
    "print(json.dumps({'decision': 'allow' if r.allowed else 'deny', 'outcome': r.outcome, 'stdout': r.stdout,\n"
    "    'error': r.error, 'reasons': [x.code for x in r.reasons],\n"
    "    'policy_revision': r.decision.policy_revision if r.decision is not None else ''}))\n"
)


def _image_id(ref: str) -> str:
    return str(_run(["docker", "image", "inspect", "--format", "{{.Id}}", ref]).stdout.strip())


def _trivy_db(out: Path) -> Path:
    """The fixture vulnerability DB (tests/trivydb): procps is critical."""
    return trivydb.build_db(out)


def _agent_call(p: Project) -> dict[str, Any]:
    done = p.compose("exec", "-T", "agent", "python", "-c", AGENT_CALL, check=False, timeout=120)
    assert done.stdout.strip(), done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


@pytest.fixture
def pinned_project(tmp_path: Path, built: dict[str, str]) -> Iterator[tuple[Project, str]]:
    del built
    _run(["docker", "build", "-q", "-t", PIN_IMAGE, "-"], input=f"FROM {SANDBOX}\nLABEL airlock.test=compose-pin\n")
    shipped = yaml.safe_load((REPO / "deploy" / "tool_registry.yaml").read_text(encoding="utf-8"))
    registry = tmp_path / "tool_registry.yaml"
    registry.write_text(
        yaml.safe_dump({"version": 1, "tools": {"python": {**shipped["tools"]["python"], "image": PIN_IMAGE}}}),
        encoding="utf-8",
    )
    p = Project(tmp_path, f"airlock-test-{uuid.uuid4().hex[:8]}")
    p.init("--registry", str(registry))
    try:
        yield p, _image_id(PIN_IMAGE)
    finally:
        p.down()
        _run(["docker", "rmi", "-f", PIN_IMAGE], check=False)


def test_the_deployment_refuses_a_retagged_image_and_a_rescan_reaches_the_policy(
    pinned_project: tuple[Project, str],
) -> None:
    p, pinned = pinned_project
    pins = json.loads((p.state / "gateway" / "images.json").read_text(encoding="utf-8"))
    assert pins == {PIN_IMAGE: {"digest": pinned, "scan": None, "size": pins[PIN_IMAGE]["size"]}}
    assert _bundle_data(p)["images"] == pins
    p.compose("up", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 60)

    ran = _agent_call(p)
    assert (ran["decision"], ran["outcome"], ran["stdout"].strip()) == ("allow", "ok", "42"), ran

    # Someone retags the tool's image: the gateway sends the pinned digest,
    # the deployed executor finds another id and refuses to run it.
    _run(["docker", "tag", SANDBOX, PIN_IMAGE])
    try:
        refused = _agent_call(p)
    finally:
        _run(["docker", "tag", pinned, PIN_IMAGE])
    assert (refused["decision"], refused["outcome"]) == ("allow", "error"), refused
    assert "image_mismatch" in refused["error"]
    assert pinned in refused["error"]
    audited = p.compose("exec", "-T", "gateway", "grep", "-c", "image_mismatch", "/var/lib/airlock/audit/audit.jsonl")
    assert int(audited.stdout) >= 1
    # The pinned image back under its name: it runs again.
    assert _agent_call(p)["outcome"] == "ok"

    # The operator's rescan, on the host: Trivy against the executor's engine,
    # then the bundle re-signed into the bundle server's folder. OPA takes
    # it, the gateway reads the scan, and the critical findings deny.
    db = _trivy_db(p.root / "trivy-db")
    before = _bundle_data(p)
    done = _run([*AIRLOCK, "deploy", "rescan", "--state", str(p.state), "--trivy-db", str(db)])
    (summary,) = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert (summary["image"], summary["digest"], summary["critical"]) == (PIN_IMAGE, pinned, 2), summary
    revision = done.stdout.strip().splitlines()[-1].rsplit(" ", 1)[1]
    after = _bundle_data(p)
    assert after["images"][PIN_IMAGE]["scan"]["critical"] == 2
    assert after["images"] != before["images"]
    assert (p.state / "bundles" / "bundle.tar.gz").stat().st_uid == 10006
    deadline = time.monotonic() + 30
    answer: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = _agent_call(p)
        if answer.get("policy_revision") == revision:
            break
        time.sleep(1)
    assert answer.get("policy_revision") == revision, answer
    assert (answer["decision"], answer["reasons"]) == ("deny", ["image_vulnerable"]), answer
