"""The Prometheus and Grafana deliverables against a real stack: the live
/metrics pass promtool's lint, deploy/prometheus's alert rules are valid and
unit-tested, and every query of the Grafana dashboard returns data from a
real Prometheus scraping the stack with the shipped scrape config."""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from helpers import REPO, Stack, auth, scrape, tool_call

from airlock.v1 import call_pb2, executor_pb2, gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "airlock-dashboard.json"
#: The shipped scrape jobs and the stack.json metrics entry each one scrapes.
JOBS = {"airlock-gateway": "gateway", "airlock-executor": "executor", "opa": "opa"}
#: Grafana's built-in variables, as the dashboard test fills them in. A rate
#: over 1m at a 1 s scrape interval sees the whole workload.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1m"}
ALLOWED = '{"code": "print(1)"}'
# Loopback only: never let an http_proxy from the environment see these calls.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (Debian package prometheus)"
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _invoke(stub: gateway_pb2_grpc.GatewayServiceStub, token: str, tool: str, arguments: str, call_id: str) -> str:
    """The run outcome ("ok", "timeout", …) or the refusal's status name."""
    request = gateway_pb2.InvokeRequest(call=tool_call(tool, arguments, call_id=call_id))
    try:
        resp = stub.Invoke(request, metadata=auth(token), timeout=60)
    except grpc.RpcError as exc:
        return str(exc.code().name)
    outcome: str = executor_pb2.Outcome.Name(resp.result.outcome)
    return outcome.removeprefix("OUTCOME_").lower()


# -- promtool ------------------------------------------------------------------


def test_metrics_pass_promtool_check(stack: Stack) -> None:
    with grpc.insecure_channel(stack.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        # Traffic first, so the labelled histograms and counters are exposed too.
        outcomes = [
            _invoke(stub, stack.token, "python", ALLOWED, "lint_ok"),
            _invoke(stub, stack.token, "python", '{"code": "import sys; sys.exit(3)"}', "lint_exit"),
            _invoke(stub, stack.token, "web_fetch", '{"url": "https://en.wikipedia.org/"}', "lint_deny"),
            _invoke(stub, stack.token, "python", "{not json", "lint_malformed"),
        ]
    assert outcomes == ["ok", "nonzero_exit", "PERMISSION_DENIED", "INVALID_ARGUMENT"]
    promtool = _binary("promtool")
    for component, family in [
        ("gateway", "airlock_gateway_invoke_duration_seconds_bucket"),
        ("executor", "airlock_executor_container_start_seconds_bucket"),
    ]:
        with _HTTP.open(stack.info["metrics"][component], timeout=5) as resp:
            text = resp.read().decode()
        assert f"\n{family}{{" in text, f"{component} /metrics lacks {family} after traffic"
        proc = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
        )
        assert (proc.returncode, proc.stdout + proc.stderr) == (0, ""), f"{component} /metrics"


def test_alert_rules_are_valid_and_unit_tested(tmp_path: Path) -> None:
    promtool = _binary("promtool")
    # check config on a copy: it also loads the rule file next to it.
    shutil.copy(PROMETHEUS_DIR / "prometheus.yml", tmp_path)
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path)
    for args in [
        ["check", "rules", str(PROMETHEUS_DIR / "alerts.yml")],
        ["test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml")],
        ["check", "config", str(tmp_path / "prometheus.yml")],
    ]:
        proc = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}{proc.stderr}"

    # promtool passes a test file that forgets an alert, so check coverage here:
    # every alert needs a case where it fires and one where it must stay silent.
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    cases = [
        case for group in yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
        for case in group.get("alert_rule_test", [])
    ]  # fmt: skip
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert alerts, "alerts.yml defines no alerts"
    assert alerts - fires == set(), "alerts without a firing test case"
    assert alerts - silent == set(), "alerts without a case where they must not fire"
    assert (fires | silent) - alerts == set(), "test cases for alerts that do not exist"


# -- a real Prometheus -----------------------------------------------------------


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with _HTTP.open(url, timeout=10) as resp:
                body: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # a bad query is a 400 with a JSON error body
            body = json.loads(exc.read())
        return body

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets", state="active")["data"]["activeTargets"])


def _scrape_config(stack: Stack, rules: Path) -> dict[str, Any]:
    """The shipped prometheus.yml, pointed at this stack's ports and scraping every second."""
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == set(JOBS)
    config["global"] = {**config.get("global", {}), "scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(rules)]
    for job in config["scrape_configs"]:
        url = urllib.parse.urlsplit(stack.info["metrics"][JOBS[job["job_name"]]])
        assert url.path == job.get("metrics_path", "/metrics")
        job["static_configs"] = [{"targets": [url.netloc]}]
    return config


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[Prometheus]:
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(_scrape_config(stack, PROMETHEUS_DIR / "alerts.yml")))
    url = f"http://127.0.0.1:{_free_port()}"
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                _binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={url.removeprefix('http://')}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"prometheus exited with {proc.returncode}:\n{log.read_text()}"
            try:
                with _HTTP.open(f"{url}/-/ready", timeout=1) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        _wait_for("prometheus to be ready", ready, timeout=20)
        yield Prometheus(url)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) for every query target, rows' nested panels included."""
    dashboard = json.loads(DASHBOARD.read_text())
    datasource_vars = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert [(v["name"], v["query"]) for v in datasource_vars] == [("datasource", "prometheus")]
    queries = []
    pending = list(dashboard["panels"])
    while pending:
        panel = pending.pop(0)
        pending.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            # A fixed uid would not exist in the importing Grafana.
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            queries.append((panel["title"], target["expr"]))
    return queries


def _fill_in(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


def test_dashboard_queries_return_data_from_a_real_prometheus(stack: Stack, prometheus: Prometheus) -> None:
    queries = _dashboard_queries()
    assert len(queries) >= 20

    def scraped_everything(since: float) -> Callable[[], bool]:
        def check() -> bool:
            targets = prometheus.targets()
            decisions = scrape(stack.info["metrics"]["gateway"], "airlock_gateway_decisions_total")
            runs = scrape(stack.info["metrics"]["executor"], "airlock_executor_runs_total")
            return (
                sorted(t["labels"]["job"] for t in targets) == sorted(JOBS)
                and all(t["health"] == "up" and _seconds(t["lastScrape"]) > since for t in targets)
                and prometheus.scalar("sum(airlock_gateway_decisions_total) or vector(0)") == decisions
                and prometheus.scalar("sum(airlock_executor_runs_total)") == runs
            )

        return check

    with grpc.insecure_channel(stack.gateway) as channel, ThreadPoolExecutor(max_workers=1) as pool:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)

        def call(tool: str, arguments: str, call_id: str) -> str:
            return _invoke(stub, stack.token, tool, arguments, call_id)

        def in_session(session_id: str, call_id: str) -> str:
            """An allowed python call in a session: the sandbox mode it ran in."""
            request = gateway_pb2.InvokeRequest(call=tool_call("python", ALLOWED, call_id=call_id))
            request.call.session_id = session_id
            mode = stub.Invoke(request, metadata=auth(stack.token), timeout=60).result.sandbox.mode
            return call_pb2.SandboxMode.Name(mode).removeprefix("SANDBOX_MODE_").lower()

        _wait_for("the first scrape of every target", scraped_everything(0), timeout=15)
        # A series Prometheus first sees after its only increment has a rate of
        # 0, so one allowed and one denied call are scraped before the rest.
        warm_up = [call("python", ALLOWED, "dash_warm_ok"), call("web_fetch", '{"url": "https://x.org/"}', "dash_warm")]
        assert warm_up == ["ok", "PERMISSION_DENIED"]
        _wait_for("the warm-up calls to be scraped", scraped_everything(time.time()), timeout=15)

        # The 10 s python timeout is the slow part; run it alongside the rest.
        timed_out = pool.submit(call, "python", '{"code": "while True: pass"}', "dash_timeout")
        outcomes = [call("python", ALLOWED, f"dash_ok_{i}") for i in range(4)]
        outcomes += [
            call("web_fetch", '{"url": "https://en.wikipedia.org/"}', "dash_deny"),
            call("python", '{"code": ', "dash_malformed"),
            call("python", '{"code": "import sys; sys.exit(3)"}', "dash_exit"),
            timed_out.result(timeout=45),
        ]
        # The sandbox panels: the calls above were ephemeral (pool claims); a
        # session is started, used again and ended (the shared stack keeps
        # no session of ours).
        session = f"dash_session_{time.monotonic_ns()}"
        modes = [in_session(session, "dash_session_1"), in_session(session, "dash_session_2")]
        end = gateway_pb2.EndSessionRequest(session_id=session)
        ended = stub.EndSession(end, metadata=auth(stack.token), timeout=30)
    assert outcomes == [*["ok"] * 4, "PERMISSION_DENIED", "INVALID_ARGUMENT", "nonzero_exit", "timeout"]
    assert (modes, [s.session_id for s in ended.ended]) == (["session", "session"], [session])
    _wait_for("the workload to be scraped", scraped_everything(time.time()), timeout=20)

    failures = []
    for title, expr in queries:
        if "$" in _fill_in(expr):
            failures.append(f"{title}: {expr}\n    -> a variable the test does not fill in")
            continue
        answer = prometheus.query(_fill_in(expr))
        values = [float(sample["value"][1]) for sample in answer.get("data", {}).get("result", [])]
        if answer["status"] != "success" or not any(math.isfinite(v) for v in values):
            failures.append(f"{title}: {expr}\n    -> {answer.get('error') or values or 'no data'}")
    assert failures == [], "dashboard queries without data:\n" + "\n".join(failures)

    assert {t["labels"]["job"]: t["health"] for t in prometheus.targets()} == dict.fromkeys(JOBS, "up")
    # The real Prometheus also loaded and evaluated the shipped alert rules.
    groups = prometheus.api("rules")["data"]["groups"]
    health = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    assert health, "prometheus loaded no alert rules"
    assert set(health.values()) == {"ok"}, health


def _seconds(rfc3339: str) -> float:
    """Prometheus' lastScrape in seconds since the epoch; it has nanoseconds,
    which fromisoformat does not take."""
    match = re.fullmatch(r"([^.]+)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", rfc3339)
    assert match, rfc3339
    head, fraction, zone = match.groups()
    return datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]:0<6}{zone.replace('Z', '+00:00')}").timestamp()
