"""Image pins and scans, offline: the gateway's reading of the published file
(airlock/gateway/_images.py) into input.image, the digest the run is sent
with, and the CLI's records, summaries and DB checks (airlock/cli/_images.py).
The real Trivy, Docker and stack are in tests/integration/test_image_gate.py."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client import CollectorRegistry

from airlock.cli import _images as images
from airlock.gateway import load_registry
from airlock.gateway._core import _pinned_digest
from airlock.gateway._images import ImagePins
from airlock.gateway._input import build_policy_input
from airlock.gateway._metrics import ImageMetrics
from airlock.gateway._model import Call, CallInput, Decision, Principal, Reason

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
IMAGE = "airlock/sandbox-python:4"
SCAN = {"critical": 1, "high": 2, "medium": 3, "low": 4, "scanned_at": "2026-12-07T00:00:00Z", "db_updated_at": "x"}


def _pins(tmp_path: Path, doc: Any) -> ImagePins:
    path = tmp_path / "images.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return ImagePins(path)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({IMAGE: {"digest": DIGEST, "size": 1, "scan": SCAN}}, {"ref": IMAGE, "digest": DIGEST, "scan": SCAN}),
        ({IMAGE: {"digest": DIGEST, "size": 1, "scan": None}}, {"ref": IMAGE, "digest": DIGEST, "scan": None}),
        ({"other:1": {"digest": DIGEST, "scan": None}}, None),  # not this image: not pinned
        # Unusable files pin nothing: the stale-scan rule decides, never a clean scan.
        ("{not json", None),
        ([1, 2], None),
        ({IMAGE: {"digest": "latest", "scan": None}}, None),
        ({IMAGE: {"digest": DIGEST, "scan": {"critical": 0}}}, None),
        # Counts that are not integers >= 0 would read as "no critical findings".
        ({IMAGE: {"digest": DIGEST, "scan": {**SCAN, "critical": None}}}, None),
        ({IMAGE: {"digest": DIGEST, "scan": {**SCAN, "critical": "3"}}}, None),
        ({IMAGE: {"digest": DIGEST, "scan": {**SCAN, "high": -1}}}, None),
        ({IMAGE: {"digest": DIGEST, "scan": {**SCAN, "medium": 1.5}}}, None),
        ({IMAGE: {"digest": DIGEST, "scan": {**SCAN, "low": True}}}, None),
        ({IMAGE: {"digest": DIGEST, "scan": {**SCAN, "scanned_at": 0}}}, None),
    ],
)
def test_what_the_policy_is_shown(tmp_path: Path, doc: Any, expected: Any) -> None:
    assert _pins(tmp_path, doc).facts(IMAGE) == expected


def test_no_file_and_no_image_pin_nothing(tmp_path: Path) -> None:
    assert ImagePins(tmp_path / "absent.json").facts(IMAGE) is None
    assert ImagePins(None).facts(IMAGE) is None
    assert _pins(tmp_path, {IMAGE: {"digest": DIGEST, "scan": None}}).facts("") is None  # a hosted tool


def test_the_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    pins = _pins(tmp_path, {IMAGE: {"digest": DIGEST, "scan": None}})
    assert pins.facts(IMAGE) == {"ref": IMAGE, "digest": DIGEST, "scan": None}
    path = tmp_path / "images.json"
    path.write_text(json.dumps({IMAGE: {"digest": DIGEST, "scan": SCAN}}))
    os.utime(path, ns=(10**18, 10**18))
    assert pins.facts(IMAGE) == {"ref": IMAGE, "digest": DIGEST, "scan": SCAN}
    path.unlink()
    assert pins.facts(IMAGE) is None


def _input(pins: ImagePins | None) -> dict[str, Any]:
    registry = load_registry(REPO / "deploy" / "tool_registry.yaml")
    who = Principal("dev-agent", "default", "token")
    inp = CallInput(
        call=Call(call_id="c1", item_type="function_call", tool="python", arguments="{}"), principal=who, rpc="Invoke"
    )
    return build_policy_input(
        registry, inp, who, decision_id="d1", arguments={"code": "1"}, counters={"window_seconds": 3600}, images=pins
    )


def test_the_input_carries_the_pin_and_validates(tmp_path: Path) -> None:
    schema = json.loads((REPO / "policies" / "schema" / "input.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema["properties"]["image"])
    pinned = _input(_pins(tmp_path, {IMAGE: {"digest": DIGEST, "size": 1, "scan": SCAN}}))
    assert pinned["image"] == {"ref": IMAGE, "digest": DIGEST, "scan": SCAN}
    assert pinned["tool"]["image"] == IMAGE  # the registry entry is untouched
    for doc in (pinned, _input(None)):
        assert list(validator.iter_errors(doc["image"])) == []
    assert _input(None)["image"] is None


@pytest.mark.parametrize(
    ("image_doc", "expected"),
    [
        ({"ref": IMAGE, "digest": DIGEST, "scan": None}, DIGEST),
        ({"ref": "other:1", "digest": DIGEST, "scan": None}, ""),  # not the image that runs
        (None, ""),
    ],
)
def test_the_run_is_sent_the_digest_the_policy_saw(image_doc: Any, expected: str) -> None:
    decision = Decision("d", True, (Reason("allowed", "ok"),), "none", policy_input={"image": image_doc})
    assert _pinned_digest(decision, IMAGE) == expected


# -- the CLI's side --------------------------------------------------------------


def test_records_scans_and_policy_data(tmp_path: Path) -> None:
    images.write_records(tmp_path, {IMAGE: images.Record(IMAGE, DIGEST, 10, "2026-12-07T00:00:00Z")})
    assert images.policy_data(tmp_path) == {IMAGE: {"digest": DIGEST, "size": 10, "scan": None}}
    where = images.digest_dir(tmp_path, DIGEST)
    where.mkdir(parents=True)
    (where / "scan.json").write_text(json.dumps({**SCAN, "unknown": 0, "image": IMAGE, "digest": DIGEST}))
    assert images.policy_data(tmp_path) == {IMAGE: {"digest": DIGEST, "size": 10, "scan": SCAN}}
    assert oct((tmp_path / "images").stat().st_mode & 0o777) == "0o755"


def test_summaries_count_by_severity() -> None:
    report = {
        "Results": [
            {"Vulnerabilities": [{"Severity": "CRITICAL"}, {"Severity": "LOW"}, {"Severity": "weird"}]},
            {"Vulnerabilities": None},
            {},
        ]
    }
    assert images.summarize(report) == {"critical": 1, "high": 0, "medium": 0, "low": 1, "unknown": 1}
    assert images.summarize({}) == dict.fromkeys(images.SEVERITIES, 0)


@pytest.mark.parametrize(
    ("files", "code"),
    [
        ({}, "scan_db_missing"),
        ({"trivy.db": "x"}, "scan_db_missing"),
        ({"trivy.db": "x", "metadata.json": "{not json"}, "scan_db_corrupt"),
        ({"trivy.db": "x", "metadata.json": '{"Version": 2}'}, "scan_db_corrupt"),
    ],
)
def test_a_db_folder_is_checked_before_trivy_runs(tmp_path: Path, files: dict[str, str], code: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(images.ImageError) as info:
        images.db_metadata(tmp_path)
    assert info.value.code == code


def test_where_the_db_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRLOCK_TRIVY_DB", raising=False)
    assert images.db_dir(tmp_path, None) == tmp_path / "images" / "trivy-db"
    monkeypatch.setenv("AIRLOCK_TRIVY_DB", "/srv/db")
    assert images.db_dir(tmp_path, None) == Path("/srv/db")
    assert images.db_dir(tmp_path, Path("/given")) == Path("/given")


def test_registry_images_name_their_tools() -> None:
    found = images.registry_images(REPO / "deploy" / "tool_registry.yaml")
    assert "python" in found[IMAGE]
    assert found["airlock/sandbox-desktop:5"] == ["computer"]


def test_image_metrics_per_tool() -> None:
    prom = CollectorRegistry()
    recent = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    facts: dict[str, Any] = {
        "python": {"ref": IMAGE, "digest": DIGEST, "scan": {**SCAN, "scanned_at": recent}},
        "shell": {"ref": IMAGE, "digest": DIGEST, "scan": None},
        "computer": None,
    }
    ImageMetrics(prom, lambda: list(facts.items()))
    vulns = "airlock_gateway_tool_image_vulnerabilities"
    assert prom.get_sample_value(vulns, {"tool": "python", "severity": "critical"}) == 1
    assert prom.get_sample_value(vulns, {"tool": "python", "severity": "low"}) == 4
    assert prom.get_sample_value(vulns, {"tool": "shell", "severity": "critical"}) is None
    age = prom.get_sample_value("airlock_gateway_tool_image_scan_age_seconds", {"tool": "python"})
    assert age is not None
    assert 7190 < age < 7300
    scanned = "airlock_gateway_tool_image_scanned"
    assert [prom.get_sample_value(scanned, {"tool": t}) for t in facts] == [1, 0, 0]


def test_the_rescanner_scans_publishes_and_reports_failures() -> None:
    said: list[str] = []
    calls: list[str] = []
    outcomes = iter([None, images.ImageError("scan_db_missing", "no DB"), None])

    def scan() -> None:
        calls.append("scan")
        failure = next(outcomes, None)
        if failure is not None:
            raise failure

    rescanner = images.Rescanner(0.05, scan, lambda: calls.append("publish"), said.append)
    deadline = time.monotonic() + 5
    while calls.count("publish") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    rescanner.stop()
    # A failed scan publishes nothing: the last scans stay.
    assert calls[:5] == ["scan", "publish", "scan", "scan", "publish"]
    assert said[1] == "airlock up: image rescan failed (scan_db_missing; the last scans stay): no DB"
