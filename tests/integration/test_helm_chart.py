"""The Helm chart in deploy/kubernetes, rendered and checked without a
cluster: `helm lint`; `helm template` with the default values, the TLS and
monitoring example and egress on; every built-in object validated by
kubernetes-validate against a pinned Kubernetes version (the CRD objects by
structural checks here); checkov with the justified skips of
deploy/kubernetes/checkov*.yaml; and the security properties the chart
exists for, read from the rendered objects. The daemons' configs the chart
renders are parsed by the daemons' own config classes. The artifact store
is rendered local (an emptyDir, and a claim in the example) and on S3.

The tools are the real ones: helm from $AIRLOCK_TOOLS (or PATH), and
kubernetes-validate and checkov from the venv scripts/bootstrap-deploy-lint
makes. A missing tool fails the test, it never skips it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO

from airlock.cli._opa import authz_policy, opa_config
from airlock.common import parse_config
from airlock.executor._config import ExecutorConfig
from airlock.gateway._config import ArtifactS3Config, ArtifactsConfig, GatewayConfig
from airlock.gateway._images import IMAGES_FILE, ImagePins

pytestmark = pytest.mark.integration

CHART = REPO / "deploy" / "kubernetes"
EXAMPLE = CHART / "examples" / "values-tls-monitoring.yaml"
#: The Kubernetes version manifests are validated against (and rendered for).
KUBE_VERSION = "1.34.0"
NAMESPACE = "airlock"
RELEASE = "t"
#: The example values' OPA token (its digest is in the example file).
EXAMPLE_OPA_TOKEN = "example-opa-token"
#: Kinds from CRDs (Prometheus Operator, cert-manager): kubernetes-validate
#: has no schema for them, so they are checked structurally below instead.
CRD_KINDS = {"PodMonitor", "PrometheusRule", "Certificate"}
UIDS = {"gateway": 10001, "executor": 10002, "opa": 10003, "agent": 10004}
#: An artifact store on S3, its credentials in a Secret of the operator's.
S3_SECRET = "airlock-artifacts-s3"
S3_VALUES = (
    "--set", "gateway.artifacts.backend=s3",
    "--set", "gateway.artifacts.s3.endpointUrl=https://s3.example.com",
    "--set", "gateway.artifacts.s3.bucket=airlock-artifacts",
    "--set", "gateway.artifacts.s3.prefix=team-a",
    "--set", "gateway.artifacts.s3.region=eu-central-1",
    "--set", f"gateway.artifacts.s3.credentialsSecret.name={S3_SECRET}",
    # Ignored with s3: the volume is only a spool, never a claim.
    "--set", "gateway.artifacts.persistence.enabled=true",
)  # fmt: skip
#: Where the gateway container mounts the store's volume, and the store in it.
ARTIFACTS_MOUNT = "/var/lib/airlock/artifacts"
ARTIFACTS_STORE = f"{ARTIFACTS_MOUNT}/store"
#: What `checkov` must never do here: phone home (guidelines, update check).
OFFLINE_ENV = {"BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "TRUE"}

Render = list[dict[str, Any]]


def _tools_dir() -> Path:
    # As scripts/_env.sh decides it.
    if os.environ.get("AIRLOCK_TOOLS"):
        return Path(os.environ["AIRLOCK_TOOLS"])
    if os.geteuid() == 0:
        return Path("/opt/airlock/tools")
    return Path.home() / ".local/share/airlock/tools"


def _tool(name: str) -> str:
    venv = _tools_dir() / "deploy-lint-venv" / "bin" / name
    found = (
        str(venv)
        if venv.is_file()
        else shutil.which(name, path=f"{_tools_dir()}{os.pathsep}{os.environ.get('PATH', '')}")
    )
    assert found, f"{name} is not installed; run scripts/bootstrap-deploy-lint (and scripts/bootstrap for helm)"
    return found


def _offline(argv: list[str]) -> list[str]:
    """As root, in a network namespace of its own: the linters cannot reach anything."""
    if os.geteuid() == 0 and shutil.which("unshare"):
        return ["unshare", "--net", "--", *argv]
    return argv


def _run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kw)


@pytest.fixture(scope="session")
def helm() -> str:
    return _tool("helm")


@pytest.fixture(scope="session")
def render(helm: str) -> Callable[..., Render]:
    cache: dict[tuple[str, ...], Render] = {}

    def _render(*args: str) -> Render:
        if args not in cache:
            done = _run(
                [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, *args]
            )
            assert done.returncode == 0, f"helm template {' '.join(args)} failed:\n{done.stderr}"
            cache[args] = [d for d in yaml.safe_load_all(done.stdout) if d]
        return cache[args]

    return _render


@pytest.fixture(scope="session")
def default(render: Callable[..., Render]) -> Render:
    return render()


@pytest.fixture(scope="session")
def example(render: Callable[..., Render]) -> Render:
    return render("--values", str(EXAMPLE))


@pytest.fixture(scope="session")
def egress(render: Callable[..., Render]) -> Render:
    return render("--set", "executor.egress.enabled=true")


@pytest.fixture(scope="session")
def s3(render: Callable[..., Render]) -> Render:
    return render(*S3_VALUES)


def _one(objs: Render, kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def _pod(objs: Render, kind: str) -> dict[str, Any]:
    pod: dict[str, Any] = _one(objs, kind)["spec"]["template"]["spec"]
    return pod


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = [*pod.get("initContainers", []), *pod["containers"]]
    for c in containers:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name!r}")


def _config(objs: Render, suffix: str, key: str) -> str:
    data: dict[str, str] = _one(objs, "ConfigMap", suffix)["data"]
    return data[key]


# --- helm --------------------------------------------------------------------


def test_helm_lint(helm: str) -> None:
    for values in ([], ["--values", str(EXAMPLE)], ["--set", "executor.egress.enabled=true"], list(S3_VALUES)):
        done = _run([helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *values])
        assert done.returncode == 0, f"helm lint {values}:\n{done.stdout}\n{done.stderr}"
        assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # The gateway's gRPC listener stays on loopback: only the Pod's agent reaches it.
        (["--set", "gateway.listen=0.0.0.0:50051"], "/gateway/listen"),
        (["--set", "executor.egress.bridge=a-bridge-name-too-long"], "/executor/egress/bridge"),
        (["--set", "gateway.agents[0].tokenSha256=not-a-digest"], "/gateway/agents/0/tokenSha256"),
        (["--set", "images.gateway.pullPolicy=Sometimes"], "/images/gateway/pullPolicy"),
        (["--set", "gateway.unknownKey=1"], "unknownKey"),
        (["--set", "agent.principal=nobody"], "is not one of gateway.agents[].id"),
        (
            ["--set", "gateway.audit.persistence.enabled=true", "--set", "agent.replicas=2"],
            "one audit log per gateway",
        ),
        (
            ["--set", "gateway.artifacts.persistence.enabled=true", "--set", "agent.replicas=2"],
            "one gateway per local store",
        ),
        (["--set", "gateway.artifacts.backend=nfs"], "/gateway/artifacts/backend"),
        # The image pins are the JSON object `airlock images pins` prints, each with a sha256 digest.
        (["--set", "gateway.imagePins=nope"], "gateway.imagePins: not a JSON object of image pins"),
        (["--set", "gateway.artifacts.quota.maxBytes=0"], "/gateway/artifacts/quota/maxBytes"),
        # backend s3 needs an endpoint and a bucket; plain http only on loopback, as the gateway.
        (["--set", "gateway.artifacts.backend=s3"], "/gateway/artifacts/s3/bucket"),
        (
            [*S3_VALUES, "--set", "gateway.artifacts.s3.endpointUrl=http://s3.example.com"],
            "/gateway/artifacts/s3/endpointUrl",
        ),
    ],
)
def test_bad_values_are_refused(helm: str, args: list[str], message: str) -> None:
    done = _run([helm, "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, *args])
    assert done.returncode != 0, f"helm template {args} rendered"
    assert message in done.stderr, done.stderr


# --- kubernetes-validate -------------------------------------------------------


def _validate(objs: Render, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(objs, sort_keys=False), encoding="utf-8")
    return _run(_offline([_tool("kubernetes-validate"), "--kubernetes-version", KUBE_VERSION, "--strict", str(path)]))


@pytest.mark.parametrize("which", ["default", "example", "egress", "s3"])
def test_manifests_validate(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    objs: Render = request.getfixturevalue(which)
    builtin = [o for o in objs if o["kind"] not in CRD_KINDS]
    done = _validate(builtin, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # Every built-in object had a schema and passed (none skipped silently).
    assert "Couldn't find schema" not in done.stdout + done.stderr
    assert done.stdout.count("passed for resource") == len(builtin), done.stdout


def test_validation_catches_broken_objects(default: Render, tmp_path: Path) -> None:
    deployment = _one(default, "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": "http"}]
    done = _validate([broken], tmp_path)
    assert done.returncode != 0
    assert "containerPort" in done.stdout + done.stderr

    misspelt = yaml.safe_load(yaml.safe_dump(deployment))
    misspelt["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUsr"] = 0
    done = _validate([misspelt], tmp_path)
    assert done.returncode != 0, "an unknown field passed --strict validation"
    assert "runAsUsr" in done.stdout + done.stderr


def test_crd_objects_are_well_formed(example: Render) -> None:
    """PodMonitor, PrometheusRule and Certificate: no schema in
    kubernetes-validate, so what they must get right is checked here."""
    assert {o["kind"] for o in example} >= CRD_KINDS
    pods = {
        "agent": _pod(example, "Deployment"),
        "executor": _pod(example, "DaemonSet"),
    }
    jobs = set()
    for monitor in (o for o in example if o["kind"] == "PodMonitor"):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        spec = monitor["spec"]
        component = spec["selector"]["matchLabels"]["app.kubernetes.io/component"]
        workload = next(
            o for o in example if o["kind"] in {"Deployment", "DaemonSet"} and o["spec"]["selector"] == spec["selector"]
        )
        assert workload is not None
        ports = {
            p["name"]
            for c in [*pods[component].get("initContainers", []), *pods[component]["containers"]]
            for p in c.get("ports", [])
        }
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        for endpoint in spec["podMetricsEndpoints"]:
            assert endpoint["port"] in ports, f"{monitor['metadata']['name']}: no port {endpoint['port']}"
            assert endpoint["path"] == "/metrics"
            [relabel] = endpoint["relabelings"]
            assert relabel["targetLabel"] == "job"
            jobs.add(relabel["replacement"])
    # The job names alerts.yml and the Grafana dashboard select on.
    assert jobs == {"airlock-gateway", "airlock-executor", "opa"}

    rule = _one(example, "PrometheusRule")
    alerts = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text(encoding="utf-8"))
    assert rule["spec"] == alerts
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert r["alert"]
            assert r["expr"]
            assert r["labels"]["severity"] in {"warning", "critical"}

    certs = {c["spec"]["secretName"]: c["spec"] for c in example if c["kind"] == "Certificate"}
    server = certs["airlock-executor-tls"]
    client = certs["airlock-gateway-executor-tls"]
    assert f"{RELEASE}-airlock-executor.{NAMESPACE}.svc" in server["dnsNames"]
    assert "server auth" in server["usages"]
    assert "client auth" in client["usages"]
    assert server["issuerRef"] == client["issuerRef"]  # one CA: each side verifies the other with it


# --- checkov -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "config"),
    [
        ("default", "checkov.yaml"),
        ("example", "checkov.yaml"),
        ("egress", "checkov-egress.yaml"),
        ("s3", "checkov.yaml"),
    ],
)
def test_checkov(which: str, config: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    objs: Render = request.getfixturevalue(which)
    (tmp_path / "manifests.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False), encoding="utf-8")
    done = _run(
        _offline([_tool("checkov"), "--config-file", str(CHART / config), "--directory", str(tmp_path)]),
        env={**os.environ, **OFFLINE_ENV},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"Passed checks: [1-9]\d*, Failed checks: 0", done.stdout), done.stdout


@pytest.mark.parametrize("config", ["checkov.yaml", "checkov-egress.yaml"])
def test_every_skipped_check_is_justified(config: str) -> None:
    lines = (CHART / config).read_text(encoding="utf-8").splitlines()
    skips = yaml.safe_load("\n".join(lines))["skip-check"]
    assert skips
    for check in skips:
        at = lines.index(f"  - {check}")
        above = lines[at - 1].strip()
        # Its own comment, or a run of ids sharing the comment above them.
        while above.startswith("- CKV"):
            at -= 1
            above = lines[at - 1].strip()
        assert above.startswith("#"), f"{config}: {check} is skipped without a comment saying why"


# --- the chart's single sources of truth -----------------------------------------


@pytest.mark.parametrize(
    ("chart_file", "source"),
    [("files/alerts.yml", "deploy/prometheus/alerts.yml"), ("files/tool_registry.yaml", "deploy/tool_registry.yaml")],
)
def test_chart_files_are_the_repository_files(chart_file: str, source: str) -> None:
    assert (CHART / chart_file).read_bytes() == (REPO / source).read_bytes()


def test_daemon_configs_parse_as_the_daemons_own(example: Render, default: Render, s3: Render) -> None:
    for objs in (default, example, s3):
        gw = parse_config(yaml.safe_load(_config(objs, "-gateway", "gateway.yaml")), GatewayConfig, source="chart")
        ex = parse_config(yaml.safe_load(_config(objs, "-executor", "executor.yaml")), ExecutorConfig, source="chart")
        assert gw.executor.address == f"{RELEASE}-airlock-executor.{NAMESPACE}.svc:50052"
        assert gw.executor.tls is not None
        assert gw.executor.tls.cert_file  # mutual TLS
        assert gw.listen == "127.0.0.1:50051"
        assert gw.opa.url == "unix:///run/airlock/opa/opa.sock"
        assert gw.artifacts is not None
        assert gw.artifacts.path == ARTIFACTS_STORE
        assert ex.listen == "0.0.0.0:50052"
        assert ex.tls is not None
        assert ex.tls.client_ca_file
        assert not ex.egress.enabled
        assert yaml.safe_load(_config(objs, "-gateway", "tool_registry.yaml")) == yaml.safe_load(
            (REPO / "deploy/tool_registry.yaml").read_text(encoding="utf-8")
        )


@pytest.mark.parametrize(("kind", "name"), [("Deployment", "gateway"), ("DaemonSet", "executor")])
def test_daemon_commands_are_the_daemons_own(kind: str, name: str, default: Render, tmp_path: Path) -> None:
    """The commands and probes the chart gives the daemons are ones their CLI
    accepts: the probe, run here as the kubelet would (with a ready file no
    daemon wrote), answers "not serving", never a usage error."""
    container = _container(_pod(default, kind), name)
    serve = container["command"]
    assert serve[:4] == ["python", "-m", f"airlock.{name}", "serve"]
    ready = serve[serve.index("--ready-file") + 1]
    assert ready.startswith("/tmp/")
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
    # The gateway's liveness asks only that the process serves (an OPA
    # outage makes it unready; a restart would not cure it).
    live = ["--live"] if name == "gateway" else []
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        argv = container[probe]["exec"]["command"]
        flags = live if probe == "livenessProbe" else []
        assert argv == ["python", "-m", f"airlock.{name}", "health", *flags, "--ready-file", ready], probe
        absent = str(tmp_path / "nobody.ready")
        done = _run([sys.executable, *[absent if a == ready else a for a in argv[1:]]])
        assert done.returncode == 1, done.stderr
        assert "usage:" not in done.stderr
        assert "not serving" in done.stderr


def test_agent_environment_is_what_the_agent_reads(default: Render) -> None:
    env = {e["name"]: e.get("value") for e in _container(_pod(default, "Deployment"), "agent")["env"]}
    assert env["AIRLOCK_AGENT_GATEWAY"] == "127.0.0.1:50051"
    assert env["AIRLOCK_AGENT_TOKEN_FILE"] == "/run/airlock/agent/token"
    # The names `python -m airlock.agent` (the airlock/agent image) takes its defaults from.
    agent_main = (REPO / "airlock/agent/__main__.py").read_text(encoding="utf-8")
    for name in ("AIRLOCK_AGENT_GATEWAY", "AIRLOCK_AGENT_TOKEN_FILE"):
        assert f'os.environ.get("{name}"' in agent_main, name


def test_opa_files_match_airlock_up(example: Render) -> None:
    rendered = _config(example, "-opa", "authz.rego")
    expected = authz_policy(EXAMPLE_OPA_TOKEN)
    # Only the first line (who wrote it) differs.
    assert rendered.splitlines()[1:] == expected.splitlines()[1:]
    values = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert values["opa"]["authz"]["gatewayTokenSha256"] == hashlib.sha256(EXAMPLE_OPA_TOKEN.encode()).hexdigest()

    config = yaml.safe_load(_config(example, "-opa", "opa.yaml"))
    want = opa_config(
        values["opa"]["bundle"]["serviceUrl"],
        Path("/run/airlock/opa-secrets/bundle-server.token"),
        values["opa"]["bundle"]["publicKey"],
    )
    # Polling is slower than `airlock up`'s loopback bundle server; all else is the same.
    want["bundles"]["airlock"]["polling"] = {"min_delay_seconds": 10, "max_delay_seconds": 60}
    assert config == want


# --- security properties -----------------------------------------------------------


def _restricted(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """Pod Security "restricted" violations of one container (plus our read-only root)."""
    sc, psc = container.get("securityContext", {}), pod.get("securityContext", {})
    problems = []
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        problems.append("runAsNonRoot")
    if sc.get("runAsUser", psc.get("runAsUser")) in (None, 0):
        problems.append("runAsUser")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation")
    if sc.get("privileged"):
        problems.append("privileged")
    caps = sc.get("capabilities", {})
    if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
        problems.append("capabilities")
    if sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type") not in {"RuntimeDefault", "Localhost"}:
        problems.append("seccompProfile")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem")
    return problems


@pytest.mark.parametrize("which", ["default", "example"])
def test_agent_pod_is_restricted(which: str, request: pytest.FixtureRequest) -> None:
    pod = _pod(request.getfixturevalue(which), "Deployment")
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert pod["automountServiceAccountToken"] is False
    assert not [v for v in pod["volumes"] if "hostPath" in v]
    for c in [*pod["initContainers"], *pod["containers"]]:
        assert _restricted(pod, c) == [], f"{c['name']}: {_restricted(pod, c)}"
    uids = {c["name"]: c["securityContext"]["runAsUser"] for c in [*pod["initContainers"], *pod["containers"]]}
    assert uids == {
        "gateway-secrets": UIDS["gateway"],
        "opa-secrets": UIDS["opa"],
        "opa": UIDS["opa"],
        "gateway": UIDS["gateway"],
        "agent": UIDS["agent"],
    }


def test_native_sidecars(default: Render) -> None:
    pod = _pod(default, "Deployment")
    inits = [(c["name"], c.get("restartPolicy")) for c in pod["initContainers"]]
    # Secrets copied first; then OPA, then the gateway (it needs OPA), both kept running.
    assert inits == [("gateway-secrets", None), ("opa-secrets", None), ("opa", "Always"), ("gateway", "Always")]
    assert [c["name"] for c in pod["containers"]] == ["agent"]
    for name in ("opa", "gateway"):
        assert "startupProbe" in _container(pod, name), f"{name}: the agent must start only once {name} serves"
    opa = _container(pod, "opa")
    assert opa["startupProbe"]["httpGet"]["path"] == "/health?bundles"
    assert opa["startupProbe"]["httpGet"]["port"] == "opa-diag"
    assert {"--authentication=token", "--authorization=basic"} <= set(opa["command"])
    assert "unix:///run/airlock/opa/opa.sock" in opa["command"]
    gateway = _container(pod, "gateway")
    assert gateway["startupProbe"]["exec"]["command"][:4] == ["python", "-m", "airlock.gateway", "health"]


@pytest.mark.parametrize("which", ["default", "example"])
def test_agent_sees_nothing_of_the_gateway_or_opa(which: str, request: pytest.FixtureRequest) -> None:
    pod = _pod(request.getfixturevalue(which), "Deployment")
    volumes = {v["name"]: v for v in pod["volumes"]}
    agent = _container(pod, "agent")
    mounted = {m["name"] for m in agent["volumeMounts"]}
    assert mounted == {"agent-token", "agent-tmp"}
    for name in (
        "opa-socket",
        "audit",
        "artifacts",
        "gateway-secrets",
        "gateway-secrets-in",
        "opa-secrets",
        "opa-secrets-in",
    ):
        assert name not in mounted
    # The agent's volumes are its own: no other container mounts them.
    for c in pod["initContainers"]:
        assert not mounted & {m["name"] for m in c.get("volumeMounts", [])}, c["name"]
    # Its only secret is its token.
    assert volumes["agent-token"]["secret"]["secretName"] == "airlock-agent-token"
    assert [i["path"] for i in volumes["agent-token"]["secret"]["items"]] == ["token"]
    # OPA's socket is shared by OPA and the gateway alone; the audit log and
    # the artifact store are the gateway's alone.
    users = {
        v: sorted(c["name"] for c in pod["initContainers"] if v in {m["name"] for m in c.get("volumeMounts", [])})
        for v in ("opa-socket", "audit", "artifacts")
    }
    assert users == {"opa-socket": ["gateway", "opa"], "audit": ["gateway"], "artifacts": ["gateway"]}


def test_image_pins_reach_the_gateway_beside_its_registry_without_a_restart(
    default: Render, render: Callable[..., Render], tmp_path: Path
) -> None:
    """gateway.imagePins (`airlock images pins`) is images.json in the folder
    of the gateway's registry, read by the gateway's own ImagePins; it is a
    ConfigMap of its own, outside the Pod's checksum, so new pins (a
    rescan's) reach running gateways without restarting the agents."""
    digest = "sha256:" + "ab" * 32
    scan = {"critical": 0, "high": 1, "medium": 2, "low": 3, "scanned_at": "2026-01-01T00:00:00Z",
            "db_updated_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    pins_file = tmp_path / "pins.json"
    pins_file.write_text(json.dumps({"airlock/sandbox-python:4": {"digest": digest, "size": 1, "scan": scan}}))
    pinned = render("--set-file", f"gateway.imagePins={pins_file}")
    assert json.loads(_config(default, "-image-pins", "images.json")) == {}
    written = tmp_path / "gateway" / IMAGES_FILE
    written.parent.mkdir()
    written.write_text(_config(pinned, "-image-pins", "images.json"))
    registry = yaml.safe_load(_config(pinned, "-gateway", "gateway.yaml"))["registry"]
    facts = ImagePins.beside(written.parent / Path(registry).name).facts("airlock/sandbox-python:4")
    assert facts == {"ref": "airlock/sandbox-python:4", "digest": digest, "scan": scan}
    pod = _pod(pinned, "Deployment")
    volume = {v["name"]: v for v in pod["volumes"]}["gateway-config"]
    names = [s["configMap"]["name"] for s in volume["projected"]["sources"]]
    assert names == [f"{RELEASE}-airlock-gateway", f"{RELEASE}-airlock-image-pins"]
    assert _mounters(pod, "gateway-config") == {"gateway": str(Path(registry).parent)}
    annotations = _one(pinned, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == _one(default, "Deployment")["spec"]["template"]["metadata"]["annotations"]


def _mounters(pod: dict[str, Any], volume: str) -> dict[str, str]:
    """Container name -> where it mounts ``volume``, over every container of the Pod."""
    return {
        c["name"]: m["mountPath"]
        for c in [*pod.get("initContainers", []), *pod["containers"]]
        for m in c.get("volumeMounts", [])
        if m["name"] == volume
    }


def test_artifact_store_is_the_gateways_alone(default: Render, example: Render) -> None:
    """The store's volume is mounted by the gateway container alone; the
    rendered artifacts section is `airlock up`'s (local backend, default
    quotas and retention) with the store in a folder of that volume."""
    for objs in (default, example):
        pod = _pod(objs, "Deployment")
        assert _mounters(pod, "artifacts") == {"gateway": ARTIFACTS_MOUNT}
        for c in [*pod["initContainers"], *pod["containers"]]:
            if c["name"] != "gateway":
                paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
                assert not [x for x in paths if x.startswith("/var/lib/airlock")], (c["name"], paths)
        gw = parse_config(yaml.safe_load(_config(objs, "-gateway", "gateway.yaml")), GatewayConfig, source="chart")
        assert gw.artifacts == ArtifactsConfig(path=ARTIFACTS_STORE)
        # The Pod's fsGroup makes a fresh volume writable by the gateway (the
        # store folder it creates is 0700); the gateway runs as its own uid.
        assert pod["securityContext"]["fsGroup"]
        assert _container(pod, "gateway")["securityContext"]["runAsUser"] == UIDS["gateway"]

    # Default: an emptyDir, sized; nothing persistent, any rollout strategy.
    volumes = {v["name"]: v for v in _pod(default, "Deployment")["volumes"]}
    assert volumes["artifacts"] == {"name": "artifacts", "emptyDir": {"sizeLimit": "10Gi"}}
    assert not [o for o in default if o["kind"] == "PersistentVolumeClaim"]
    # The example: a claim of the chart's own, kept on uninstall; one writer.
    volumes = {v["name"]: v for v in _pod(example, "Deployment")["volumes"]}
    claim = _one(example, "PersistentVolumeClaim", "-artifacts")
    assert volumes["artifacts"]["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"]}
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert _one(example, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_artifact_store_on_s3_gives_its_credentials_to_the_gateway_alone(s3: Render, default: Render) -> None:
    pod = _pod(s3, "Deployment")
    gw = parse_config(yaml.safe_load(_config(s3, "-gateway", "gateway.yaml")), GatewayConfig, source="chart")
    assert gw.artifacts == ArtifactsConfig(
        backend="s3",
        path=ARTIFACTS_STORE,
        s3=ArtifactS3Config(
            endpoint_url="https://s3.example.com",
            bucket="airlock-artifacts",
            prefix="team-a",
            region="eu-central-1",
            credentials_file="/run/airlock/gateway-secrets/s3-credentials.yaml",
        ),
    )
    volumes = {v["name"]: v for v in pod["volumes"]}
    # The Secret is a source of the gateway's secret volume and of no other.
    holding = sorted(n for n, v in volumes.items() if S3_SECRET in _secret_names(v))
    assert holding == ["gateway-secrets-in"]
    [source] = [
        s["secret"] for s in volumes["gateway-secrets-in"]["projected"]["sources"] if s["secret"]["name"] == S3_SECRET
    ]
    assert source["items"] == [{"key": "s3-credentials.yaml", "path": "s3-credentials.yaml"}]
    # Mounted by the gateway's copy alone, copied 0600 into the gateway's
    # memory-backed folder, which the gateway alone mounts besides the copy.
    assert _mounters(pod, "gateway-secrets-in") == {"gateway-secrets": "/run/airlock/gateway-secrets-in"}
    copy = _container(pod, "gateway-secrets")
    assert "/run/airlock/gateway-secrets-in/s3-credentials.yaml" in copy["command"]
    assert set(_mounters(pod, "gateway-secrets")) == {"gateway-secrets", "gateway"}
    assert "gateway-secrets" not in {m["name"] for m in _container(pod, "agent")["volumeMounts"]}
    # The store's volume is a spool in an emptyDir (persistence is for the
    # local store), still the gateway's alone; no claim, no Recreate.
    assert _mounters(pod, "artifacts") == {"gateway": ARTIFACTS_MOUNT}
    assert "emptyDir" in volumes["artifacts"]
    assert not [o for o in s3 if o["kind"] == "PersistentVolumeClaim"]
    assert "strategy" not in _one(s3, "Deployment")["spec"]
    # The local default has no such Secret anywhere.
    assert not [v for v in _pod(default, "Deployment")["volumes"] if S3_SECRET in _secret_names(v)]


def _secret_names(volume: dict[str, Any]) -> list[str]:
    if "secret" in volume:
        return [volume["secret"]["secretName"]]
    return [s["secret"]["name"] for s in volume.get("projected", {}).get("sources", []) if "secret" in s]


@pytest.mark.parametrize("which", ["example", "s3"])
@pytest.mark.parametrize("kind", ["Deployment", "DaemonSet"])
def test_daemons_read_secrets_only_from_their_own_memory_copies(
    kind: str, which: str, request: pytest.FixtureRequest
) -> None:
    pod = _pod(request.getfixturevalue(which), kind)
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret_volumes = {n for n, v in volumes.items() if _secret_names(v)}
    copies = [c for c in pod["initContainers"] if c["name"].endswith("-secrets")]
    assert copies
    for c in [*pod["initContainers"], *pod["containers"]]:
        mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
        reads = secret_volumes & set(mounts)
        if c in copies:
            # The copy: the secret volume in, a memory-backed emptyDir out, mode 0600, as the daemon's uid.
            [src] = reads
            [dst] = set(mounts) - reads
            assert volumes[src].get("projected", volumes[src].get("secret"))["defaultMode"] == 0o440
            assert volumes[dst]["emptyDir"]["medium"] == "Memory"
            assert c["command"][:3] == ["install", "-m", "0600"]
            served = _container(pod, c["name"].removesuffix("-secrets"))
            assert c["image"] == served["image"]
            assert c["securityContext"]["runAsUser"] == served["securityContext"]["runAsUser"]
            assert dst in {m["name"] for m in served["volumeMounts"]}
        elif c["name"] != "agent":  # the agent's token is not a daemon's secret
            assert not reads, f"{c['name']} mounts a secret volume itself: {reads}"


@pytest.mark.parametrize("which", ["default", "s3"])
def test_every_secret_file_a_config_names_is_copied(which: str, request: pytest.FixtureRequest) -> None:
    objs: Render = request.getfixturevalue(which)
    agent_pod, executor_pod = _pod(objs, "Deployment"), _pod(objs, "DaemonSet")
    for text, pod, copy in (
        (_config(objs, "-gateway", "gateway.yaml"), agent_pod, "gateway-secrets"),
        (_config(objs, "-opa", "opa.yaml"), agent_pod, "opa-secrets"),
        (_config(objs, "-executor", "executor.yaml"), executor_pod, "executor-secrets"),
    ):
        named = set(re.findall(r"/run/airlock/[\w-]+-secrets/[\w.-]+", text))
        command = _container(pod, copy)["command"]
        target = command[-1].rstrip("/")
        copied = {f"{target}/{Path(src).name}" for src in command[3:-1]}
        assert named, copy
        assert named <= copied, f"{copy} does not copy {named - copied}"


def test_executor_without_egress(default: Render) -> None:
    pod = _pod(default, "DaemonSet")
    ex = _container(pod, "executor")
    sc = ex["securityContext"]
    assert not pod.get("hostNetwork")
    assert sc["runAsUser"] == UIDS["executor"]
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["supplementalGroups"] == [107]  # the docker group, default
    host = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    assert host == {
        "docker-socket": {"path": "/var/run/docker.sock", "type": "Socket"},
        "cgroup": {"path": "/sys/fs/cgroup", "type": "Directory"},
    }
    mounts = {m["name"]: m for m in ex["volumeMounts"]}
    assert mounts["cgroup"]["readOnly"] is True
    assert _container(pod, "executor-secrets")["securityContext"]["allowPrivilegeEscalation"] is False


def test_executor_with_egress_adds_only_what_egress_needs(default: Render, egress: Render) -> None:
    before, after = _pod(default, "DaemonSet"), _pod(egress, "DaemonSet")
    assert after["hostNetwork"] is True
    assert after["dnsPolicy"] == "ClusterFirstWithHostNet"
    sc = _container(after, "executor")["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert sc["allowPrivilegeEscalation"] is True
    # Nothing else changes (the agent Pod not at all).
    strip = {"hostNetwork", "dnsPolicy"}
    assert {k: v for k, v in after.items() if k not in strip | {"containers"}} == {
        k: v for k, v in before.items() if k not in strip | {"containers"}
    }
    assert _pod(egress, "Deployment") == _pod(default, "Deployment")
    assert yaml.safe_load(_config(egress, "-executor", "executor.yaml"))["egress"]["enabled"] is True


def test_executor_network_policy(default: Render) -> None:
    policy = _one(default, "NetworkPolicy", "-executor")
    executor_labels = _one(default, "DaemonSet")["spec"]["selector"]["matchLabels"]
    agent_labels = _one(default, "Deployment")["spec"]["selector"]["matchLabels"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == executor_labels
    assert spec["policyTypes"] == ["Ingress"]
    grpc_rule, metrics_rule = spec["ingress"]
    assert grpc_rule["from"] == [{"podSelector": {"matchLabels": agent_labels}}]
    assert grpc_rule["ports"] == [{"port": 50052, "protocol": "TCP"}]
    assert metrics_rule["ports"] == [{"port": 9465, "protocol": "TCP"}]
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    # The agent Pods take nothing but metrics scrapes.
    agent_policy = _one(default, "NetworkPolicy", "-agent")["spec"]
    assert agent_policy["podSelector"]["matchLabels"] == agent_labels
    assert [p["port"] for rule in agent_policy["ingress"] for p in rule["ports"]] == [9464, 8282]


def test_images_are_local(example: Render, render: Callable[..., Render]) -> None:
    for kind in ("Deployment", "DaemonSet"):
        pod = _pod(example, kind)
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            assert re.fullmatch(r"airlock/(gateway|executor|opa|agent):0\.1\.0", c["image"]), c["image"]
            assert c["imagePullPolicy"] == "IfNotPresent"
    digest = "sha256:" + "a" * 64
    pinned = _pod(render("--set", f"images.gateway.digest={digest}"), "Deployment")
    assert _container(pinned, "gateway")["image"] == f"airlock/gateway:0.1.0@{digest}"


def test_each_node_executor_names_its_sandboxes_by_release_and_node(default: Render) -> None:
    """Executors in containers all have the same socket path: the instance
    name keeps one's start-up sweep off another's sandboxes."""
    env = {e["name"]: e for e in _container(_pod(default, "DaemonSet"), "executor")["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["AIRLOCK_EXECUTOR_INSTANCE"]["value"].endswith("-$(NODE_NAME)")


def test_agent_egress_policy_is_opt_in_and_limits_the_pod(
    default: Render, render: Callable[..., Render], tmp_path: Path
) -> None:
    """The agent shares its Pod's network with the gateway and OPA: with
    networkPolicy.agentEgress on, the Pod reaches DNS, the executors and
    what is listed, nothing else."""
    assert _one(default, "NetworkPolicy", "-agent")["spec"]["policyTypes"] == ["Ingress"]
    objs = render(
        "--set",
        "networkPolicy.agentEgress.enabled=true",
        "--set-json",
        'networkPolicy.agentEgress.to=[{"ipBlock":{"cidr":"0.0.0.0/0","except":["169.254.169.254/32"]}}]',
        "--set-json",
        'networkPolicy.agentEgress.ports=[{"port":443,"protocol":"TCP"}]',
    )
    spec = _one(objs, "NetworkPolicy", "-agent")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    dns, executor, listed = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert executor["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "executor"
    assert listed["to"][0]["ipBlock"]["except"] == ["169.254.169.254/32"]
    assert listed["ports"] == [{"port": 443, "protocol": "TCP"}]
    done = _validate([o for o in objs if o["kind"] not in CRD_KINDS], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
