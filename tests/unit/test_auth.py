"""gateway._auth: bearer tokens -> Principal."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway._auth import Authenticator
from gateway._config import Agent
from gateway._model import Principal

FILE_TOKEN = "file-token-0123456789abcdef"
SHA_TOKEN = "sha-token-abcdefghijklmnop"
ALICE = Principal("alice", "default", "token")
BOB = Principal("bob", "untrusted", "token")


@pytest.fixture
def auth(tmp_path: Path) -> Authenticator:
    token_file = tmp_path / "alice.token"
    token_file.write_text(FILE_TOKEN + "\n", encoding="utf-8")
    return Authenticator(
        [
            Agent(id="alice", token_file=str(token_file)),
            Agent(id="bob", profile="untrusted", token_sha256=hashlib.sha256(SHA_TOKEN.encode()).hexdigest()),
        ]
    )


@pytest.mark.parametrize(
    ("metadata", "principal", "error"),
    [
        pytest.param([], None, "missing authorization metadata", id="missing"),
        pytest.param([("x-other", "Bearer " + FILE_TOKEN)], None, "missing authorization metadata", id="other-key"),
        pytest.param(
            [("authorization", "Basic " + FILE_TOKEN)], None, "authorization must be 'Bearer <token>'", id="basic"
        ),
        pytest.param([("authorization", FILE_TOKEN)], None, "authorization must be 'Bearer <token>'", id="no-scheme"),
        pytest.param([("authorization", "Bearer")], None, "authorization must be 'Bearer <token>'", id="no-token"),
        pytest.param([("authorization", "Bearer ")], None, "authorization must be 'Bearer <token>'", id="empty-token"),
        pytest.param([("authorization", "Bearer wrong-token-0000000000")], None, "unknown token", id="unknown"),
        pytest.param([("authorization", "Bearer " + FILE_TOKEN[:-1])], None, "unknown token", id="prefix"),
        pytest.param(
            [("authorization", "Bearer " + FILE_TOKEN), ("authorization", "Bearer " + SHA_TOKEN)],
            None,
            "more than one authorization header",
            id="two-headers",
        ),
        pytest.param(
            [("authorization", "Bearer " + FILE_TOKEN), ("authorization", "Bearer " + FILE_TOKEN)],
            None,
            "more than one authorization header",
            id="two-equal-headers",
        ),
        pytest.param([("authorization", "Bearer " + FILE_TOKEN)], ALICE, "", id="token-file"),
        pytest.param([("authorization", "bearer " + FILE_TOKEN)], ALICE, "", id="scheme-case"),
        pytest.param([("authorization", ("Bearer " + FILE_TOKEN).encode())], ALICE, "", id="bytes-value"),
        pytest.param([("x-request-id", "1"), ("authorization", "Bearer " + SHA_TOKEN)], BOB, "", id="token-sha256"),
    ],
)
def test_authenticate(auth: Authenticator, metadata, principal, error) -> None:
    got, why = auth.authenticate(metadata)
    assert got == principal
    if error:
        assert error in why
    else:
        assert why == ""


def test_file_token_must_not_be_short(tmp_path: Path) -> None:
    token_file = tmp_path / "short.token"
    token_file.write_text("short\n", encoding="utf-8")
    with pytest.raises(ValueError, match="shorter than 16"):
        Authenticator([Agent(id="a", token_file=str(token_file))])
