"""executor._options: hardened container options; a spec can only tighten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from docker.types import Ulimit

from airlock.common import ConfigError
from airlock.common.wire import LIMIT_KEYS, Limits
from airlock.executor._config import Ceilings, ExecutorConfig, load_executor_config
from airlock.executor._model import EffectiveLimits, RunSpec
from airlock.executor._options import (
    DEFAULT_SECCOMP_PROFILE,
    MANAGED_LABEL,
    REAP_AT_LABEL,
    RUN_GRACE_S,
    EgressAttachment,
    ceilings,
    clamp,
    container_options,
    load_seccomp_profile,
    reap_at,
)

MiB = 1024**2
TOP = EffectiveLimits(
    memory_bytes=512 * MiB,
    cpu_millis=1000,
    pids=128,
    timeout_ms=60_000,
    output_bytes=MiB,
    tmpfs_bytes=64 * MiB,
    nofile=1024,
)
PROFILE = '{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[]}'


def _cfg(**kw: Any) -> ExecutorConfig:
    return ExecutorConfig(socket="/x", token_file="/y", **kw)


def _spec(**kw: Any) -> RunSpec:
    limits = {k: kw.pop(k) for k in list(kw) if k in LIMIT_KEYS}
    return RunSpec(
        run_id="run-1", tool="python", image="img:1", argv=("python3", "-c", "print(1)"), limits=Limits(**limits), **kw
    )


def test_ceilings_from_default_config() -> None:
    assert ceilings(_cfg()) == TOP


def test_ceilings_from_custom_config() -> None:
    cfg = _cfg(limits=Ceilings(memory="1g", cpus=0.5, pids=10, timeout="2m", output="10k", tmpfs=4096, nofile=64))
    assert ceilings(cfg) == EffectiveLimits(1024**3, 500, 10, 120_000, 10 * 1024, 4096, 64)


@pytest.mark.parametrize(
    ("field", "asked", "expected"),
    [
        pytest.param("memory_bytes", 2 * 1024**3, 512 * MiB, id="above-ceiling"),
        pytest.param("memory_bytes", 0, 512 * MiB, id="zero-means-ceiling"),
        pytest.param("memory_bytes", 128 * MiB, 128 * MiB, id="below-kept"),
        pytest.param("memory_bytes", 512 * MiB, 512 * MiB, id="equal"),
        pytest.param("memory_bytes", -1, 512 * MiB, id="negative-means-ceiling"),
        pytest.param("cpu_millis", 4000, 1000, id="cpu-above"),
        pytest.param("cpu_millis", 250, 250, id="cpu-below"),
        pytest.param("pids", 100_000, 128, id="pids-above"),
        pytest.param("pids", 16, 16, id="pids-below"),
        pytest.param("timeout_ms", 3_600_000, 60_000, id="timeout-above"),
        pytest.param("timeout_ms", 200, 200, id="timeout-below"),
        pytest.param("output_bytes", 10**9, MiB, id="output-above"),
        pytest.param("output_bytes", 1, 1, id="output-below"),
        pytest.param("tmpfs_bytes", 10**10, 64 * MiB, id="tmpfs-above"),
        pytest.param("tmpfs_bytes", MiB, MiB, id="tmpfs-below"),
    ],
)
def test_clamp_only_tightens(field: str, asked: int, expected: int) -> None:
    got = clamp(_spec(**{field: asked}), TOP)
    assert getattr(got, field) == expected
    # Every other limit is the ceiling.
    for other in ("memory_bytes", "cpu_millis", "pids", "timeout_ms", "output_bytes", "tmpfs_bytes", "nofile"):
        if other != field:
            assert getattr(got, other) == getattr(TOP, other)


def test_clamp_all_zero_is_the_ceiling() -> None:
    assert clamp(_spec(), TOP) == TOP


def test_container_options_are_hardened() -> None:
    limits = EffectiveLimits(256 * MiB, 500, 64, 10_000, MiB, 16 * MiB, 512)
    spec = _spec(env={"LANG": "C.UTF-8"})
    opts = container_options(spec, limits, _cfg(), PROFILE, reap_deadline=1234)
    assert opts["image"] == "img:1"
    # Exactly argv, behind the deadline wrapper (timeout + 2 s), whatever
    # ENTRYPOINT the image declares.
    assert opts["entrypoint"] == ["/usr/bin/timeout", "-s", "KILL", "12.000s"]
    assert opts["command"] == ["python3", "-c", "print(1)"]
    assert opts["labels"][REAP_AT_LABEL] == "1234"
    assert opts["read_only"] is True
    assert opts["privileged"] is False
    assert opts["cap_drop"] == ["ALL"]
    assert "cap_add" not in opts
    assert opts["security_opt"] == ["no-new-privileges:true", f"seccomp={PROFILE}"]
    assert opts["network_mode"] == "none"
    assert opts["user"] == "65534:65534"
    uid, _, gid = opts["user"].partition(":")
    assert int(uid) != 0
    assert int(gid) != 0
    assert opts["mem_limit"] == 256 * MiB
    assert opts["memswap_limit"] == opts["mem_limit"]
    assert opts["pids_limit"] == 64 + 1  # the deadline wrapper
    assert opts["nano_cpus"] == 500_000_000
    tmp = opts["tmpfs"]["/tmp"].split(",")
    assert {"noexec", "nosuid", "nodev"} <= set(tmp)
    assert f"size={16 * MiB}" in tmp
    work = opts["tmpfs"][opts["working_dir"]].split(",")
    assert {"nosuid", "nodev", f"size={16 * MiB}"} <= set(work)
    assert set(opts["tmpfs"]) == {"/tmp", opts["working_dir"]}
    assert opts["log_config"] == {"type": "none"}
    assert opts["labels"][MANAGED_LABEL] == "true"
    assert opts["labels"]["airlock.run_id"] == "run-1"
    assert opts["environment"] == {"LANG": "C.UTF-8"}
    assert opts["runtime"] == "runc"
    assert opts["tty"] is False
    assert opts["stdin_open"] is False
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in opts["ulimits"]}
    # nproc is host-wide per uid: every concurrent run at the pids ceiling
    # (and its wrapper), plus slack.
    nproc = (128 + 1) * 16 + 64
    assert ulimits == {
        "nofile": (512, 512),
        "fsize": (16 * MiB, 16 * MiB),
        "core": (0, 0),
        "nproc": (nproc, nproc),
    }
    assert all(isinstance(u, Ulimit) for u in opts["ulimits"])


def test_container_options_without_egress_have_no_network() -> None:
    """Only the runner's egress argument attaches a network; the spec alone never does."""
    opts = container_options(_spec(network_mode="egress", egress_allowlist=("a:443",)), TOP, _cfg(), PROFILE)
    assert opts["network_mode"] == "none"


def test_container_options_with_egress_join_the_internal_network() -> None:
    proxy_env = {"HTTPS_PROXY": "http://airlock:t@172.18.0.1:4000"}
    spec = _spec(network_mode="egress", env={"HTTPS_PROXY": "http://evil:1", "LANG": "C"})
    attachment = EgressAttachment("airlock-egress", proxy_env, "172.18.0.1", "172.18.3.7")
    opts = container_options(spec, TOP, _cfg(), PROFILE, attachment)
    assert opts["network"] == "airlock-egress"
    assert "network_mode" not in opts  # docker-py refuses both
    # The sandbox's fixed address: the one its proxy credential works from.
    assert opts["networking_config"] == {"airlock-egress": {"IPAMConfig": {"IPv4Address": "172.18.3.7"}}}
    # Docker's resolver forwards to the bridge (where the firewall refuses it), never the host's resolver.
    assert opts["dns"] == ["172.18.0.1"]
    # A registry env cannot point the sandbox at another proxy.
    assert opts["environment"] == {"HTTPS_PROXY": "http://airlock:t@172.18.0.1:4000", "LANG": "C"}


def test_container_options_use_the_configured_user_and_runtime() -> None:
    cfg = _cfg(user="1000:1001", runtimes=("runc", "runsc"))
    opts = container_options(_spec(runtime="runsc"), TOP, cfg, PROFILE)
    assert opts["user"] == "1000:1001"
    assert "uid=1000" in opts["tmpfs"][opts["working_dir"]]
    assert "gid=1001" in opts["tmpfs"][opts["working_dir"]]
    assert opts["runtime"] == "runsc"


@pytest.mark.parametrize("user", ["0:0", "root", "1000", "1000:0", "0:1000", ""])
def test_config_refuses_root_or_non_numeric_user(user: str) -> None:
    with pytest.raises(ValueError, match="non-root"):
        _cfg(user=user)


def test_nproc_ulimit_covers_every_concurrent_run_at_the_ceiling() -> None:
    """A run that asks for fewer pids must not get a smaller nproc: the count is per uid, not per container."""
    cfg = _cfg(limits=Ceilings(pids=10), max_concurrent_runs=3)
    small = clamp(_spec(pids=2), ceilings(cfg))
    opts = container_options(_spec(pids=2), small, cfg, PROFILE)
    assert opts["pids_limit"] == 2 + 1
    nproc = next(u for u in opts["ulimits"] if u["Name"] == "nproc")
    assert (nproc["Soft"], nproc["Hard"]) == (11 * 3 + 64, 11 * 3 + 64)


def test_the_reaper_deadline_is_the_runs_own_deadline() -> None:
    limits = clamp(_spec(timeout_ms=10_000), TOP)
    assert reap_at(limits, now=1000.0) == 1000 + 10 + RUN_GRACE_S + 1


# -- the seccomp profile -------------------------------------------------------------


def test_the_shipped_profile_is_the_default() -> None:
    text = load_seccomp_profile(_cfg())
    assert json.loads(text) == json.loads(DEFAULT_SECCOMP_PROFILE.read_text())
    # Compact: it travels in the container's HostConfig on every create.
    assert "\n" not in text


def test_a_configured_profile_is_used(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_KILL_PROCESS", "syscalls": []}))
    assert json.loads(load_seccomp_profile(_cfg(seccomp_profile=str(path)))) == {
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "syscalls": [],
    }


def test_a_relative_profile_path_is_resolved_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    cfg_file = tmp_path / "conf" / "executor.yaml"
    cfg_file.write_text("version: 1\nsocket: x.sock\ntoken_file: t\nseccomp_profile: ../sec/p.json\n")
    cfg = load_executor_config(cfg_file)
    assert cfg.seccomp_profile == str((tmp_path / "sec" / "p.json").resolve())
    cfg_file.write_text("version: 1\nsocket: x.sock\ntoken_file: t\n")
    assert load_executor_config(cfg_file).seccomp_profile is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(None, "cannot read", id="missing"),
        pytest.param("{not json", "not valid JSON", id="not-json"),
        pytest.param('"unconfined"', "syscalls list", id="not-an-object"),
        pytest.param('{"defaultAction": "SCMP_ACT_ERRNO"}', "syscalls list", id="no-syscalls"),
        pytest.param('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}', "must deny", id="allow-by-default"),
        pytest.param('{"defaultAction": "SCMP_ACT_LOG", "syscalls": []}', "must deny", id="log-by-default"),
        pytest.param('{"syscalls": []}', "must deny", id="no-default-action"),
    ],
)
def test_a_bad_profile_is_a_config_error(tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=problem) as info:
        load_seccomp_profile(_cfg(seccomp_profile=str(path)))
    assert info.value.key == "seccomp_profile"
