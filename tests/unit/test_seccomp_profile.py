"""deploy/seccomp: the committed profile is the generator's output, and it is
the allowlist the README describes (what it denies, and the argument rules)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

SECCOMP = Path(__file__).resolve().parents[2] / "deploy" / "seccomp"

# Named in the issue: each must never be allowed unconditionally.
MUST_BE_DENIED = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "userfaultfd",
    "perf_event_open",
    "mount",
    "umount2",
    "unshare",
    "setns",
    "pivot_root",
    "chroot",
)
CLONE_NAMESPACE_FLAGS = 0x7E020000


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("airlock_seccomp_generate", SECCOMP / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolves annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator() -> Any:
    return _load_generator()


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    return json.loads((SECCOMP / "airlock.json").read_text())


def _rules_for(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in profile["syscalls"] if name in r["names"]]


def _unconditionally_allowed(profile: dict[str, Any]) -> set[str]:
    return {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for n in r["names"]}


def test_committed_profile_is_the_generators_output(generator) -> None:
    assert (SECCOMP / "airlock.json").read_text() == generator.render()


def test_check_flag_fails_on_a_stale_profile(generator, tmp_path: Path, monkeypatch) -> None:
    assert generator.main(["--check"]) == 0
    stale = tmp_path / "airlock.json"
    stale.write_text(generator.render().replace('"ptrace"', '"ptrace-stale"') + " ")
    monkeypatch.setattr(generator, "OUTPUT", stale)
    assert generator.main(["--check"]) == 1
    assert generator.main([]) == 0
    assert generator.main(["--check"]) == 0


def test_default_is_eperm_on_every_architecture(profile) -> None:
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == 1
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


@pytest.mark.parametrize("name", MUST_BE_DENIED)
def test_dangerous_syscalls_are_not_allowed(profile, generator, name) -> None:
    assert name not in _unconditionally_allowed(profile)
    # Not conditionally either: no rule names them at all.
    assert _rules_for(profile, name) == []
    assert name in generator.DENIED


def test_every_denied_syscall_has_a_reason_and_no_rule(profile, generator) -> None:
    named = {n for r in profile["syscalls"] for n in r["names"]}
    assert generator.DENIED
    for name, reason in generator.DENIED.items():
        assert reason.strip(), name
        assert name not in named, name


def test_the_readme_lists_every_denied_syscall(generator) -> None:
    readme = (SECCOMP / "README.md").read_text()
    missing = [name for name in generator.DENIED if f"`{name}`" not in readme]
    assert missing == []


def test_only_allow_rules_and_the_clone3_errno(profile) -> None:
    for rule in profile["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW":
            continue
        assert rule == {
            "action": "SCMP_ACT_ERRNO",
            "comment": rule["comment"],
            "errnoRet": 38,
            "names": ["clone3"],
        }


def test_clone_is_allowed_only_without_namespace_flags(profile) -> None:
    assert "clone" not in _unconditionally_allowed(profile)
    (rule,) = _rules_for(profile, "clone")
    assert rule["action"] == "SCMP_ACT_ALLOW"
    assert rule["names"] == ["clone"]
    assert rule["args"] == [{"index": 0, "op": "SCMP_CMP_MASKED_EQ", "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0}]


def test_clone3_answers_enosys_so_libc_falls_back_to_clone(profile) -> None:
    (rule,) = _rules_for(profile, "clone3")
    assert (rule["action"], rule["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)


def test_socket_only_for_unix_inet_inet6_and_route_netlink(profile) -> None:
    assert "socket" not in _unconditionally_allowed(profile)
    rules = _rules_for(profile, "socket")
    families = set()
    for rule in rules:
        assert rule["action"] == "SCMP_ACT_ALLOW"
        assert rule["names"] == ["socket"]
        by_index = {a["index"]: a for a in rule["args"]}
        assert by_index[0]["op"] == "SCMP_CMP_EQ"
        families.add(by_index[0]["value"])
        if by_index[0]["value"] == 16:
            # AF_NETLINK: NETLINK_ROUTE only (getaddrinfo, getifaddrs).
            assert by_index[2] == {"index": 2, "op": "SCMP_CMP_EQ", "value": 0, "valueTwo": 0}
        else:
            assert set(by_index) == {0}
    assert families == {1, 2, 10, 16}
    (pair,) = _rules_for(profile, "socketpair")
    assert pair["args"] == [{"index": 0, "op": "SCMP_CMP_EQ", "value": 1, "valueTwo": 0}]


def test_personality_only_queries_or_keeps_per_linux(profile) -> None:
    assert "personality" not in _unconditionally_allowed(profile)
    values = set()
    for rule in _rules_for(profile, "personality"):
        (arg,) = rule["args"]
        assert (arg["index"], arg["op"]) == (0, "SCMP_CMP_EQ")
        values.add(arg["value"])
    assert values == {0, 0xFFFFFFFF}


def test_rules_are_sorted_and_each_syscall_has_one_unconditional_home(profile) -> None:
    seen: set[str] = set()
    for rule in profile["syscalls"]:
        assert rule["names"] == sorted(rule["names"])
        assert rule["comment"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args"):
            assert not seen & set(rule["names"]), seen & set(rule["names"])
            seen |= set(rule["names"])


def test_the_generator_refuses_a_syscall_in_two_places(generator, monkeypatch) -> None:
    monkeypatch.setitem(generator.DENIED, "read", "a mistake")
    with pytest.raises(ValueError, match="read is denied and also in"):
        generator.render()
