"""Secret stores for the egress proxy (airlock/executor/egress/secret_store.py):
what they accept, what they refuse and why, and that a value never shows
in a repr or an error message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airlock.executor._errors import EgressSetupError
from airlock.executor.egress.secret_store import (
    MAX_VALUE_BYTES,
    ChainedSecrets,
    EnvSecrets,
    FileSecrets,
    SecretStore,
)

#: Stands for a real token; every refusal below is checked not to quote it.
TOKEN = "ghp_s3cr3tValue0123456789"


def write(tmp_path: Path, body: str, mode: int = 0o600) -> Path:
    path = tmp_path / "secrets.yaml"
    path.write_text(body, encoding="utf-8")
    path.chmod(mode)
    return path


def test_a_file_store_reads_names_and_values(tmp_path: Path) -> None:
    store = FileSecrets(write(tmp_path, f"version: 1\nsecrets:\n  github_token: {TOKEN}\n  a: 'x y'\n"))
    assert store.get("github_token") == TOKEN
    assert store.get("a") == "x y"
    assert store.get("missing") is None
    assert store.names() == frozenset({"github_token", "a"})
    assert TOKEN not in repr(store)
    assert "github_token" in repr(store)


@pytest.mark.parametrize("body", ["version: 1\n", "version: 1\nsecrets:\n", "version: 1\nsecrets: {}\n"])
def test_a_file_without_secrets_is_an_empty_store(tmp_path: Path, body: str) -> None:
    assert FileSecrets(write(tmp_path, body)).names() == frozenset()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("version: 2\nsecrets: {}\n", "version: expected 1, got 2"),
        ("version: true\nsecrets: {}\n", "version: expected 1, got True"),
        ("secrets: {}\n", "version: expected 1, got None"),
        ("version: 1\nsecrets: {}\nextra: 1\n", "unknown key 'extra' (expected version, secrets)"),
        ("- 1\n", "expected a mapping with version and secrets at the top level"),
        ("version: 1\nsecrets: [a, b]\n", "secrets: expected a mapping of name to value"),
        (f"version: 1\nsecrets:\n  GitHub: {TOKEN}\n", "the name of entry 1 is not a string matching"),
        (f"version: 1\nsecrets:\n  a: x\n  {TOKEN.upper()}: x\n", "the name of entry 2 is not a string matching"),
        (f"version: 1\nsecrets:\n  {'a' * 64}: {TOKEN}\n", "the name of entry 1"),
        (f"version: 1\nsecrets:\n  1abc: {TOKEN}\n", "the name of entry 1"),
        ("version: 1\nsecrets:\n  n: 12345\n", "secrets.n: expected a string value, got int (quote it)"),
        ("version: 1\nsecrets:\n  n: true\n", "secrets.n: expected a string value, got bool"),
        ("version: 1\nsecrets:\n  n:\n", "secrets.n: expected a string value, got NoneType"),
        ("version: 1\nsecrets:\n  n: ''\n", "secrets.n: empty value"),
        (f'version: 1\nsecrets:\n  n: "{TOKEN}\\r\\nX-Evil: 1"\n', "secrets.n: the value contains CR, LF or NUL"),
        (f'version: 1\nsecrets:\n  n: "{TOKEN}\\n"\n', "secrets.n: the value contains CR, LF or NUL"),
        (f'version: 1\nsecrets:\n  n: "{TOKEN}\\0"\n', "secrets.n: the value contains CR, LF or NUL"),
        (f"version: 1\nsecrets:\n  n: |\n    {TOKEN}\n", "secrets.n: the value contains CR, LF or NUL"),
        (f'version: 1\nsecrets:\n  n: "{TOKEN}\\ud800"\n', "secrets.n: the value is not valid Unicode text"),
        (
            f"version: 1\nsecrets:\n  n: {'x' * (MAX_VALUE_BYTES + 1)}\n",
            f"secrets.n: the value is longer than {MAX_VALUE_BYTES} bytes",
        ),
        (f"version: 1\nsecrets:\n  n: {TOKEN}\n  n: other\n", "a duplicate key at line 4, column 3"),
        (f"version: 1\nsecrets:\n  n: [{TOKEN}\n", "not valid YAML at line"),
        (f"version: 1\nsecrets:\n  n: '{TOKEN}\n", "not valid YAML at line"),
        (f"version: 1\nsecrets:\n  n: {TOKEN}\n\tx: 1\n", "not valid YAML at line"),
    ],
)
def test_a_bad_file_is_refused_without_quoting_a_value(tmp_path: Path, body: str, problem: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(EgressSetupError) as info:
        FileSecrets(path)
    message = str(info.value)
    assert message.startswith(f"egress secrets file {path}: ")
    assert problem in message
    assert TOKEN not in message
    assert TOKEN.upper() not in message
    assert info.value.__cause__ is None  # no chained parser error quoting the file either
    assert info.value.code == "egress_unavailable"


def test_exactly_8_kib_is_accepted(tmp_path: Path) -> None:
    store = FileSecrets(write(tmp_path, f"version: 1\nsecrets:\n  n: {'x' * MAX_VALUE_BYTES}\n"))
    assert store.get("n") == "x" * MAX_VALUE_BYTES


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_bytes(b"version: 1\nsecrets:\n  n: \xff\xfe\n")
    path.chmod(0o600)
    with pytest.raises(EgressSetupError, match="not UTF-8 text"):
        FileSecrets(path)


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o620, 0o602, 0o660])
def test_a_file_others_can_reach_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, f"version: 1\nsecrets:\n  n: {TOKEN}\n", mode)
    with pytest.raises(EgressSetupError, match=f"mode {mode:04o} lets other users read or write it; chmod 600"):
        FileSecrets(path)


def test_stricter_than_0600_is_fine(tmp_path: Path) -> None:
    assert FileSecrets(write(tmp_path, f"version: 1\nsecrets:\n  n: {TOKEN}\n", 0o400)).get("n") == TOKEN


def test_a_symlink_a_folder_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    target = write(tmp_path, f"version: 1\nsecrets:\n  n: {TOKEN}\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    with pytest.raises(EgressSetupError, match=r"link\.yaml: not a regular file \(a symlink is refused\)"):
        FileSecrets(link)
    with pytest.raises(EgressSetupError, match=r"nope\.yaml: cannot open: No such file"):
        FileSecrets(tmp_path / "nope.yaml")
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    with pytest.raises(EgressSetupError, match="folder: not a regular file"):
        FileSecrets(folder)


def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(EgressSetupError, match="not a regular file"):
        FileSecrets(fifo)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the file to another uid")
def test_a_file_of_another_uid_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, f"version: 1\nsecrets:\n  n: {TOKEN}\n")
    os.chown(path, 12345, -1)
    with pytest.raises(EgressSetupError, match="owned by uid 12345, not by this process"):
        FileSecrets(path)


def test_env_secrets_map_upper_case_variables_to_names() -> None:
    store = EnvSecrets(
        {"AIRLOCK_EGRESS_SECRET_GITHUB_TOKEN": TOKEN, "AIRLOCK_EGRESS_SECRET_X1": "v", "PATH": "/bin", "HOME": "/"}
    )
    assert store.get("github_token") == TOKEN
    assert store.get("x1") == "v"
    assert store.get("path") is None
    assert store.names() == frozenset({"github_token", "x1"})
    assert TOKEN not in repr(store)


def test_env_secrets_take_a_prefix_and_are_read_once() -> None:
    env = {"MY_A": "1"}
    store = EnvSecrets(env, prefix="MY_")
    env["MY_A"] = "2"
    env["MY_B"] = "3"
    assert store.get("a") == "1"
    assert store.names() == frozenset({"a"})


def test_env_secrets_default_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOCK_EGRESS_SECRET_FROM_PROCESS", TOKEN)
    assert EnvSecrets().get("from_process") == TOKEN


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("AIRLOCK_EGRESS_SECRET_T", "", "empty value"),
        ("AIRLOCK_EGRESS_SECRET_T", f"{TOKEN}\r\nX: y", "contains CR, LF or NUL"),
        ("AIRLOCK_EGRESS_SECRET_T", f"{TOKEN}\n", "contains CR, LF or NUL"),
        ("AIRLOCK_EGRESS_SECRET_T", "x" * (MAX_VALUE_BYTES + 1), "longer than 8192 bytes"),
        ("AIRLOCK_EGRESS_SECRET_T", "é" * (MAX_VALUE_BYTES // 2 + 1), "longer than 8192 bytes"),
        ("AIRLOCK_EGRESS_SECRET_T", f"{TOKEN}\udcff", "not valid Unicode text"),
        ("AIRLOCK_EGRESS_SECRET_", TOKEN, "expected an upper-case secret name"),
        ("AIRLOCK_EGRESS_SECRET_github_token", TOKEN, "expected an upper-case secret name"),
        ("AIRLOCK_EGRESS_SECRET_1X", TOKEN, "expected an upper-case secret name"),
        ("AIRLOCK_EGRESS_SECRET_A-B", TOKEN, "expected an upper-case secret name"),
        ("AIRLOCK_EGRESS_SECRET_" + "A" * 64, TOKEN, "expected an upper-case secret name"),
    ],
)
def test_a_bad_variable_is_refused_naming_it_never_its_value(variable: str, value: str, problem: str) -> None:
    with pytest.raises(EgressSetupError) as info:
        EnvSecrets({variable: value, "AIRLOCK_EGRESS_SECRET_OK": "fine"})
    message = str(info.value)
    assert message.startswith(f"environment variable {variable}: ")
    assert problem in message
    assert TOKEN not in message


def test_the_first_store_that_has_a_name_wins() -> None:
    first = EnvSecrets({"P_A": "from-first"}, prefix="P_")
    second = EnvSecrets({"P_A": "from-second", "P_B": "only-second"}, prefix="P_")
    chained = ChainedSecrets(first, second)
    assert chained.get("a") == "from-first"
    assert chained.get("b") == "only-second"
    assert chained.get("c") is None
    assert chained.names() == frozenset({"a", "b"})
    assert ChainedSecrets().names() == frozenset()
    assert ChainedSecrets().get("a") is None
    assert "from-first" not in repr(chained)


def test_the_stores_are_secret_stores(tmp_path: Path) -> None:
    stores: list[SecretStore] = [
        FileSecrets(write(tmp_path, "version: 1\n")),
        EnvSecrets({}),
        ChainedSecrets(EnvSecrets({})),
    ]
    assert all(store.names() == frozenset() for store in stores)
