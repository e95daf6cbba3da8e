"""Sandbox images an operator can vouch for, on a real stack with the real
Trivy and Docker (docs/images.md): a test vulnerability DB built by
tests/trivydb (trivy-db's own code) marks procps, which the python sandbox
image has, as critically vulnerable. Then

- before any scan, a profile that asks for scans is refused image_scan_stale;
- after `airlock images scan` and a publish the call is refused
  image_vulnerable, and in shadow mode allowed with would_deny;
- retagging another image under the tool's image name is refused by the
  executor with image_mismatch, audited;
- rebuilt without procps, pinned, scanned and published, the call runs.

A missing DB, a corrupt DB and a missing trivy each stop `airlock images
scan` with one message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from fixtures import trivydb
from helpers import Stack, auth, decision_from_error, new_home, start_stack, stop_stack, tool_call

from airlock.cli._images import find_trivy
from airlock.v1 import call_pb2, executor_pb2, gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
IMAGE = "airlock-test/image-gate:1"
BASE = "airlock/sandbox-python:4"
CODE = json.dumps({"code": "print(6 * 7)"})


def _docker_build(dockerfile: str, tag: str) -> str:
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, text=True, capture_output=True, check=True
    )
    return subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True, check=True
    ).stdout.strip()


def vulnerable_image() -> str:
    """The sandbox image as it is (procps included), under the test's own name."""
    return _docker_build(f"FROM {BASE}\nLABEL airlock.test=image-gate-vulnerable\n", IMAGE)


def fixed_image() -> str:
    """The same image rebuilt without procps."""
    return _docker_build(
        f"FROM {BASE}\nUSER 0\nRUN PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg --purge procps libproc2-0\n"
        "USER 65534:65534\nLABEL airlock.test=image-gate-fixed\n",
        IMAGE,
    )


def build_db(out: Path, advisories: Path = REPO / "tests" / "trivydb" / "advisories.json") -> Path:
    return trivydb.build_db(out, advisories)


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airlock.cli", "--home", str(home), *args],
        capture_output=True, text=True, timeout=900, check=False, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trivy() -> str:
    found = find_trivy()
    assert found is not None, "trivy is not installed: run scripts/bootstrap"
    return found


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_db(tmp_path_factory.mktemp("trivy") / "db")


class Gate:
    """The module's stack and the files it was started from."""

    def __init__(self, stack: Stack, policies: Path, registry: Path, db: Path) -> None:
        self.stack, self.policies, self.registry, self.db = stack, policies, registry, db

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(self.stack.home, *args)

    def publish(self) -> None:
        done = self.cli("policy", "publish", "--policies", str(self.policies), "--registry", str(self.registry))
        assert done.returncode == 0, done.stderr

    def pin_and_scan(self) -> dict[str, Any]:
        built = self.cli("images", "build", "--registry", str(self.registry))
        assert built.returncode == 0, built.stderr
        scanned = self.cli("images", "scan", "--registry", str(self.registry), "--db", str(self.db))
        assert scanned.returncode == 0, scanned.stderr
        (summary,) = [json.loads(line) for line in scanned.stdout.splitlines()]
        assert isinstance(summary, dict)
        return summary

    def shadow(self, codes: list[str]) -> None:
        config = self.policies / "airlock" / "config" / "data.yaml"
        doc = yaml.safe_load(config.read_text())
        doc["shadow"]["codes"] = codes
        config.write_text(yaml.safe_dump(doc))


def invoke(stack: Stack, call_id: str, token: str | None = None) -> gateway_pb2.InvokeResponse:
    with grpc.insecure_channel(stack.gateway) as channel:
        return gateway_pb2_grpc.GatewayServiceStub(channel).Invoke(
            gateway_pb2.InvokeRequest(call=tool_call("python", CODE, call_id=call_id)),
            metadata=auth(token or stack.token),
            timeout=60,
        )


def refusal(stack: Stack, call_id: str, token: str | None = None) -> call_pb2.Decision:
    with pytest.raises(grpc.RpcError) as info:
        invoke(stack, call_id, token)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    return decision_from_error(info.value)


@pytest.fixture(scope="module")
def gate(trivy: str, db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    del trivy
    vulnerable_image()
    src = tmp_path_factory.mktemp("src")
    policies = src / "policies"
    shutil.copytree(REPO / "policies", policies)
    # The untrusted profile asks for a scan no older than a day.
    grants = policies / "airlock" / "grants" / "data.yaml"
    g = yaml.safe_load(grants.read_text())
    g["profiles"]["untrusted"]["image_scan"] = {"max_age_hours": 24}
    grants.write_text(yaml.safe_dump(g))
    shipped = yaml.safe_load((REPO / "deploy" / "tool_registry.yaml").read_text())
    registry = src / "tool_registry.yaml"
    registry.write_text(
        yaml.safe_dump({"version": 1, "tools": {"python": {**shipped["tools"]["python"], "image": IMAGE}}})
    )
    home = new_home("images")
    built = cli(home, "images", "build", "--registry", str(registry))
    assert built.returncode == 0, built.stderr
    stack = start_stack(home, "--policies", str(policies), "--registry", str(registry))
    yield Gate(stack, policies, registry, db)
    code, out = stop_stack(stack)
    subprocess.run(["docker", "rmi", "-f", IMAGE], capture_output=True, check=False)
    assert code == 0, out


def test_1_a_profile_that_asks_for_scans_refuses_an_unscanned_image(gate: Gate) -> None:
    decision = refusal(gate.stack, "stale-1", gate.stack.untrusted_token)
    assert [r.code for r in decision.reasons] == ["image_scan_stale"]
    assert "never scanned" in decision.reasons[0].message
    # The default profile does not ask: pinned and unscanned runs.
    assert invoke(gate.stack, "stale-2").result.outcome == executor_pb2.OUTCOME_OK


def test_2_a_critical_finding_is_refused_image_vulnerable(gate: Gate) -> None:
    summary = gate.pin_and_scan()
    # procps and libproc2-0 (source procps); curl and libcurl4 (source curl).
    assert (summary["critical"], summary["high"], summary["medium"]) == (2, 0, 2), summary
    assert summary["db_version"] == 2
    scan_dir = gate.stack.home / "images" / summary["digest"].removeprefix("sha256:")
    report = json.loads((scan_dir / "report.json").read_text())
    found = {(v["VulnerabilityID"], v["PkgName"]) for r in report["Results"] for v in r.get("Vulnerabilities") or []}
    assert ("CVE-2099-0001", "procps") in found
    gate.publish()
    decision = refusal(gate.stack, "vuln-1")
    assert [r.code for r in decision.reasons] == ["image_vulnerable"]
    assert summary["digest"] in decision.reasons[0].message
    (event,) = gate.stack.audit_events(decision.decision_id)
    assert event["reasons"][0]["code"] == "image_vulnerable"


def test_3_in_shadow_mode_it_runs_with_would_deny(gate: Gate) -> None:
    gate.shadow(["image_vulnerable"])
    gate.publish()
    resp = invoke(gate.stack, "shadow-1")
    assert resp.decision.verdict == call_pb2.VERDICT_ALLOW
    assert [r.code for r in resp.decision.shadow_reasons] == ["image_vulnerable"]
    assert resp.result.outcome == executor_pb2.OUTCOME_OK
    assert resp.stdout == b"42\n"
    event = next(e for e in gate.stack.audit_events(resp.decision.decision_id) if e["kind"] == "decision")
    assert event["would_deny"] is True


def test_4_a_retagged_image_is_refused_image_mismatch(gate: Gate) -> None:
    pinned = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["docker", "tag", BASE, IMAGE], check=True)
    try:
        resp = invoke(gate.stack, "retag-1")
    finally:
        subprocess.run(["docker", "tag", pinned, IMAGE], check=True)
    assert resp.result.outcome == executor_pb2.OUTCOME_ERROR
    assert "image_mismatch" in resp.result.error
    assert pinned in resp.result.error
    execution = next(e for e in gate.stack.audit_events(resp.decision.decision_id) if e["kind"] == "execution")
    assert "image_mismatch" in json.dumps(execution)
    assert gate.stack.metric("executor", "airlock_executor_refused_runs_total", {"reason": "image_mismatch"}) >= 1
    # The pinned image back under its name: it runs again.
    assert invoke(gate.stack, "retag-2").result.outcome == executor_pb2.OUTCOME_OK


def test_5_rebuilt_without_the_package_it_is_allowed(gate: Gate) -> None:
    gate.shadow([])
    fixed = fixed_image()
    summary = gate.pin_and_scan()
    assert summary["digest"] == fixed
    assert (summary["critical"], summary["medium"]) == (0, 2), summary
    gate.publish()
    resp = invoke(gate.stack, "fixed-1")
    assert resp.decision.verdict == call_pb2.VERDICT_ALLOW
    assert list(resp.decision.shadow_reasons) == []
    assert resp.result.outcome == executor_pb2.OUTCOME_OK
    listed = [
        json.loads(line)
        for line in gate.cli(
            "images", "ls", "--registry", str(gate.registry), "--policies", str(gate.policies)
        ).stdout.splitlines()
    ]
    assert listed[0]["digest"] == fixed
    assert listed[0]["matches"] is True
    assert listed[0]["scan"]["critical"] == 0
    assert listed[0]["policy"]["verdicts"] == {"python": ["ok"]}
    sbom = gate.cli("images", "sbom", "python", "--registry", str(gate.registry))
    assert sbom.returncode == 0, sbom.stderr
    doc = json.loads(Path(sbom.stdout.strip()).read_text())
    assert doc["bomFormat"] == "CycloneDX"
    names = {c["name"] for c in doc["components"]}
    assert "python3" in names
    assert "procps" not in names


# -- a scan that cannot run says so, once ---------------------------------------


@pytest.fixture(scope="module")
def pinned_home(trivy: str) -> Iterator[Path]:
    del trivy
    home = new_home("images-fail")
    image = "airlock-test/image-fail:1"
    _docker_build(f"FROM {BASE}\nLABEL airlock.test=image-fail\n", image)
    registry = home / "tool_registry.yaml"
    registry.write_text(yaml.safe_dump({"version": 1, "tools": {"p": {"image": image, "argv": ["x"]}}}))
    assert cli(home, "images", "build", "--registry", str(registry)).returncode == 0
    yield home
    subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)


def _scan_error(home: Path, db: Path, env: dict[str, str] | None = None) -> str:
    done = cli(home, "images", "scan", "--registry", str(home / "tool_registry.yaml"), "--db", str(db), env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_missing_db_is_one_clear_message(pinned_home: Path, tmp_path: Path) -> None:
    line = _scan_error(pinned_home, tmp_path / "nowhere")
    assert line.startswith("airlock images scan: scan_db_missing: no Trivy vulnerability DB in")


def test_a_corrupt_db_is_one_clear_message(pinned_home: Path, db: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(db / "metadata.json", bad / "metadata.json")
    (bad / "trivy.db").write_bytes(os.urandom(65536))
    line = _scan_error(pinned_home, bad)
    assert line.startswith("airlock images scan: scan_db_corrupt: trivy could not scan"), line
    assert "invalid database" in line
    (bad / "metadata.json").write_text("{not json")
    line = _scan_error(pinned_home, bad)
    assert line.startswith("airlock images scan: scan_db_corrupt: "), line
    # Nothing was stored for the image: the stale-scan rule still applies.
    assert not list((pinned_home / "images").glob("*/scan.json"))


def test_no_trivy_is_one_clear_message(pinned_home: Path, db: Path, tmp_path: Path) -> None:
    env = {**os.environ, "AIRLOCK_TOOLS": str(tmp_path), "PATH": "/usr/bin:/bin"}
    env.pop("AIRLOCK_TRIVY", None)
    line = _scan_error(pinned_home, db, env)
    assert line == "airlock images scan: trivy_missing: trivy not found (run scripts/bootstrap, or set AIRLOCK_TRIVY)"


def test_airlock_up_rescans_and_publishes(db: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    image = "airlock-test/image-rescan:1"
    _docker_build(f"FROM {BASE}\nLABEL airlock.test=image-rescan\n", image)
    shipped = yaml.safe_load((REPO / "deploy" / "tool_registry.yaml").read_text())
    registry = tmp_path_factory.mktemp("rescan") / "tool_registry.yaml"
    registry.write_text(
        yaml.safe_dump({"version": 1, "tools": {"python": {**shipped["tools"]["python"], "image": image}}})
    )
    home = new_home("images-rescan")
    assert cli(home, "images", "build", "--registry", str(registry)).returncode == 0
    stack = start_stack(home, "--registry", str(registry), "--rescan-hours", "24", "--trivy-db", str(db))
    try:
        deadline = time.monotonic() + 120
        codes: list[str] = []
        while time.monotonic() < deadline:
            with grpc.insecure_channel(stack.gateway) as channel:
                decision = (
                    gateway_pb2_grpc.GatewayServiceStub(channel)
                    .Decide(gateway_pb2.DecideRequest(call=tool_call("python", CODE)), metadata=auth(stack.token))
                    .decision
                )
            codes = [r.code for r in decision.reasons]
            if codes == ["image_vulnerable"]:
                break
            time.sleep(0.5)
        assert codes == ["image_vulnerable"], "the rescan at start never reached the policy"
    finally:
        code, out = stop_stack(stack)
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)
    assert code == 0, out
    assert "airlock up: rescanned the registry's images and published the results" in out
