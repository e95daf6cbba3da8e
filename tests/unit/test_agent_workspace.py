"""Unit tier for the agent's workspace confinement (airlock/agent/_workspace.py) and
the apply_patch writes it guards, with a scripted gateway that ALLOWS
everything: what is refused here is refused by the agent itself, whatever
the policy said (defence in depth). Issue 10 item 3 (.git and auto-executed
files, create_file never overwrites) and item 9's agent crash (a NUL byte,
or any other path, must end in a refusal output, never an exception).

The regression tests drive ``agent.run`` with a workspace ``Path``, an API
the code before the fix had too, so they fail there for the real reason."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses.response_input_param import ApplyPatchCallOutput
from pydantic import TypeAdapter
from test_agent_items import FakeClient, ScriptedGateway, ok, response

from airlock import agent

REPO = Path(__file__).resolve().parents[2]
PATCH_OUTPUT = TypeAdapter(ApplyPatchCallOutput)
FSMONITOR = '[core]\n\tfsmonitor = "touch /tmp/pwned"\n'


def patch_item(call_id: str, op: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "apply_patch_call",
        "id": f"apc_{call_id}",
        "call_id": call_id,
        "status": "completed",
        "operation": op,
    }


FINAL = {
    "type": "message",
    "id": "msg_final",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "done", "annotations": []}],
}


def run_patches(ws: Path, ops: list[dict[str, Any]], answer: str = FSMONITOR) -> tuple[agent.AgentResult, list[Any]]:
    """One model turn with ``ops`` as apply_patch calls, then a final answer;
    the gateway allows each and the sandbox "computes" ``answer``. Returns
    the result and the output items sent back to the model."""
    gw = ScriptedGateway(lambda _tool, _args: ok(answer))
    items = [patch_item(f"call_{i}", op) for i, op in enumerate(ops)]
    client = FakeClient([response("r0", items), response("r1", [FINAL])])
    result = agent.run(client, "m", "hi", gw, workspace=ws)  # type: ignore[arg-type]
    assert len(gw.invoked) == len(ops)  # every call was decided and audited, refused or not
    return result, client.requests[1]["input"]


def files_under(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}


# Spellings of .git that Windows, macOS or a case-insensitive filesystem read
# as .git; the same list as policies/airlock/arguments/protected_test.rego.
GIT_SPELLINGS = [
    ".git/config",
    ".git",
    ".git/",
    "./.git/config",
    "/work/.git/config",
    "//work/./.git/hooks/pre-commit",
    "sub/module/.git/config",
    ".GIT/config",
    ".Git/hooks/post-checkout",
    ".git./config",
    ".git . ./config",
    ".git\\config",
    "sub\\.git\\hooks\\pre-commit",
    ".git::$INDEX_ALLOCATION/config",
    "git~1/config",
    "GIT~1/config",
    ".g\u200cit/config",
    "\ufeff.git/config",
    ".git\u202e/config",
    ".g\u0131t/config",
    ".G\u0130T/config",
]


@pytest.mark.parametrize("path", GIT_SPELLINGS)
def test_git_segment_is_refused_even_when_the_policy_allows(tmp_path: Path, path: str) -> None:
    _, [out] = run_patches(tmp_path, [{"type": "create_file", "path": path, "diff": "+x\n"}])
    PATCH_OUTPUT.validate_python(out)
    assert out["status"] == "failed"
    assert "path_protected" in out["output"] or "path_invalid" in out["output"]  # \u200c etc.: invalid as well
    assert files_under(tmp_path) == {}


@pytest.mark.parametrize(
    "path",
    [
        ".envrc",
        "deep/sub/.envrc",
        ".vscode/tasks.json",
        ".VSCode/Settings.JSON",
        ".vscode\\launch.json",
        "proj.code-workspace",
        ".devcontainer/devcontainer.json",
        ".idea/workspace.xml",
        ".npmrc",
        ".yarnrc.yml",
        ".pre-commit-config.yaml",
        ".gitattributes",
        ".gitmodules",
        ".gitcon\ufb01g",
        "node_modules/eslint/bin/eslint.js",
        # The attack run's list: the policy and the agent both allowed each.
        ".husky/pre-commit",
        ".husky/_/husky.sh",
        "lefthook.yml",
        ".lefthook.yml",
        ".vscode/mcp.json",
        ".cursor/mcp.json",
        ".cursor/rules/x.mdc",
        ".mcp.json",
        ".claude/settings.json",
        ".zed/tasks.json",
        ".github/workflows/ci.yml",
        ".gitlab-ci.yml",
        ".tool-versions",
        ".nvmrc",
        "conftest.py",
        "tests/conftest.py",
        ".pdbrc",
        ".env",
        # Found next to them.
        "mise.local.toml",
        ".pre-commit-hooks.yaml",
        ".gitpod.yml",
        "Jenkinsfile",
        ".Rprofile",
        "pkg/__pycache__/mod.cpython-312.pyc",
        "bunfig.toml",
        # Closed dot-directories that no entry names.
        ".cargo/config.toml",
        ".githooks/pre-commit",
        ".config/git/config",
        ".gemini/settings.json",
        ".vscode/extensions.json",
    ],
)
def test_auto_executed_files_are_refused(tmp_path: Path, path: str) -> None:
    _, [out] = run_patches(tmp_path, [{"type": "create_file", "path": path, "diff": "+x\n"}])
    assert out["status"] == "failed"
    assert "path_protected" in out["output"]
    assert files_under(tmp_path) == {}


def test_every_operation_on_a_protected_file_is_refused(tmp_path: Path) -> None:
    # An existing .git (the workspace is a checkout): never read, changed or deleted.
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[core]\n")
    (tmp_path / ".envrc").write_text("export A=1\n")
    gw = ScriptedGateway(lambda _tool, _args: ok(FSMONITOR))
    ops = [
        {"type": "update_file", "path": ".git/config", "diff": "+x\n"},
        {"type": "delete_file", "path": ".envrc"},
    ]
    client = FakeClient(
        [response("r0", [patch_item(f"c{i}", op) for i, op in enumerate(ops)]), response("r1", [FINAL])]
    )
    agent.run(client, "m", "hi", gw, workspace=tmp_path)  # type: ignore[arg-type]
    assert [o["status"] for o in client.requests[1]["input"]] == ["failed", "failed"]
    assert [i["args"]["original"] for i in gw.invoked] == ["", ""]  # nothing protected was read either
    assert files_under(tmp_path) == {".git/config": "[core]\n", ".envrc": "export A=1\n"}


def test_symlink_inside_the_workspace_to_git_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "cfg").symlink_to(tmp_path / ".git")
    _, [out] = run_patches(tmp_path, [{"type": "create_file", "path": "cfg/config", "diff": "+x\n"}])
    assert out["status"] == "failed"
    assert "path_protected" in out["output"]
    assert "after resolving symlinks" in out["output"]
    assert not (tmp_path / ".git" / "config").exists()


def test_create_file_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("keep me\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere.py")
    ops = [
        {"type": "create_file", "path": "a.py", "diff": "+x\n"},
        {"type": "create_file", "path": "/work/a.py", "diff": "+x\n"},
        {"type": "create_file", "path": "dir", "diff": "+x\n"},
        {"type": "create_file", "path": "new.py", "diff": "+x\n"},
    ]
    _, outs = run_patches(tmp_path, ops, answer="x\n")
    assert [o["status"] for o in outs] == ["failed", "failed", "failed", "completed"]
    for o in outs[:3]:
        assert "already exists" in o["output"]
    assert files_under(tmp_path) == {"a.py": "keep me\n", "new.py": "x\n"}
    assert not (tmp_path / "nowhere.py").exists()


def test_create_file_does_not_send_the_existing_text(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("token=abc\n")
    gw = ScriptedGateway(lambda _tool, _args: ok("x\n"))
    ws = agent.Workspace(tmp_path)
    decl = agent.declare(gw.list_tools(), apply_patch=True)
    item = agent.execute_item(
        agent.ItemContext(gw, "s", decl, 1, ws),
        _validated({"type": "create_file", "path": "secret.txt", "diff": "+x\n"}),
    )
    assert gw.invoked[0]["args"]["original"] == ""
    assert item.output_item is not None
    assert item.output_item["status"] == "failed"  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    "path",
    ["a\x00b.py", "\x00", ".git\x00/config", "x/\x00/y", "a\nb.py", "a\rb", "bell\x07", "rtl\u202egnp.py", "\ud800.py"],
)
def test_control_characters_in_a_path_end_in_a_refusal_not_a_crash(tmp_path: Path, path: str) -> None:
    result, [out] = run_patches(tmp_path, [{"type": "create_file", "path": path, "diff": "+x\n"}])
    assert result.text == "done"  # the loop went on to the final answer
    PATCH_OUTPUT.validate_python(out)
    assert out["status"] == "failed"
    json.dumps(out, ensure_ascii=False).encode("utf-8")  # the next API request can carry it
    assert files_under(tmp_path) == {}


def test_update_of_a_file_too_large_to_read_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with big.open("wb") as f:
        f.truncate(2 << 20)  # 2 MiB: read whole, it would sit in memory (and be lost to the sandbox's "x")
    _, [out] = run_patches(tmp_path, [{"type": "update_file", "path": "big.txt", "diff": "+x\n"}], answer="x\n")
    assert out["status"] == "failed"
    assert big.stat().st_size == 2 << 20


def test_extra_protected_entries_extend_the_defaults(tmp_path: Path) -> None:
    ws = agent.Workspace(tmp_path, extra_protected=("secrets", "*.pem", "conf/*.local"))
    refused = ["secrets/a.txt", "x/Server.PEM", "conf/app.local", ".git/config", ".envrc"]
    for path in refused:
        place = ws.confine(path)
        assert isinstance(place, agent.PathRefusal), path
        assert place.code == "path_protected"
    for path in ["conf/app.locals", "app.local", "src/main.py"]:
        assert ws.confine(path) == tmp_path.resolve() / path
    named = agent.Workspace(tmp_path, extra_protected={"build.sh": "CI runs it"})
    place = named.confine("tools/build.sh")
    assert isinstance(place, agent.PathRefusal)
    assert place.message == 'matches "build.sh": CI runs it'


@pytest.mark.parametrize(
    "entry", ["conf/[ab].local", "a//b", "x?", "/", "{a,b}", "", "Secrets", "a/./b", "..", "x.", "a/**", "b c", "a:b"]
)
def test_invalid_extra_entry_is_an_error_at_construction(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ValueError, match="not a valid pattern"):
        agent.Workspace(tmp_path, extra_protected=(entry,))


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("../x", "path_outside_workdir"),
        ("/etc/passwd", "path_outside_workdir"),
        ("/work", "path_outside_workdir"),
        ("", "path_outside_workdir"),
        ("link/x", "path_outside_workdir"),
        ("loop/x", "path_invalid"),
        ("a" * 5000, "path_too_long"),
        ("d/./b.py", None),
        ("/work/c.py", None),
        (".github/ISSUE_TEMPLATE/bug.md", None),
        (".changeset/blue-cats.md", None),
        (".gitignore", None),
        (".env.example", None),
        ("Makefile", None),
        (".github/workflows/ci.yml", "path_protected"),
        (".cargo/config.toml", "path_protected"),
    ],
)
def test_confine_codes(tmp_path: Path, path: str, code: str | None) -> None:
    ws_root = tmp_path / "ws"
    ws_root.mkdir()
    (ws_root / "link").symlink_to(tmp_path)
    (ws_root / "loop").symlink_to(ws_root / "loop")
    place = agent.Workspace(ws_root).confine(path)
    if code is None:
        assert isinstance(place, Path)
        assert place.is_relative_to(ws_root.resolve())
    else:
        assert isinstance(place, agent.PathRefusal)
        assert place.code == code


def test_default_list_is_the_policy_data() -> None:
    data = yaml.safe_load((REPO / "policies/airlock/arguments/data.yaml").read_text())
    assert dict(agent.DEFAULT_PROTECTED) == data["files"]["protected"]
    assert set(agent.DEFAULT_ALLOWED_DOT_DIRECTORIES) == set(data["files"]["allowed_dot_directories"])


# 16 segments of 255 bytes and 15 slashes: 4095 bytes.
NEAR_LIMIT = "/".join(["x" * 255] * 16)


@pytest.mark.parametrize(
    ("path", "too_long"),
    [
        (NEAR_LIMIT + "y", False),  # 4096 bytes: the bound itself
        (NEAR_LIMIT + "yz", True),
        ("\u00e9" * 2048, False),  # 4096 bytes in 2048 characters
        ("\u00e9" * 2049, True),  # the bound is on UTF-8 bytes, not characters
        ("\ud800" * 1366, True),  # a lone surrogate counts 3, as the U+FFFD OPA reads
        ("/".join("a" * 256), False),
        ("/".join("a" * 257), True),
        ("\\".join("a" * 257), True),  # \ separates too
        ("a" + "/" * 256, True),  # segments count as written, empty ones too
        ("x.code-workspac/" * 3500, True),  # the attack run's two paths
        ("a./" * 20000, True),
    ],
)
def test_paths_beyond_the_bounds_are_refused_as_too_long(tmp_path: Path, path: str, *, too_long: bool) -> None:
    place = agent.Workspace(tmp_path).confine(path)
    is_too_long = isinstance(place, agent.PathRefusal) and place.code == "path_too_long"
    assert is_too_long is too_long, place


def test_a_too_long_path_is_never_matched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The matcher costs more than linear time in the path; it must not see one
    # beyond the bounds, whatever else is wrong with it.
    def tripwire(*_args: object) -> list[str]:
        raise AssertionError("matched")

    ws = agent.Workspace(tmp_path)
    monkeypatch.setattr(agent.Workspace, "protected", tripwire)
    for path in ["x.code-workspac/" * 3500, ".git/" * 300, "\x00" * 5000, "../" * 300]:
        place = ws.confine(path)
        assert isinstance(place, agent.PathRefusal)
        assert place.code == "path_too_long"


def test_a_too_long_patch_is_decided_refused_and_not_written(tmp_path: Path) -> None:
    path = "x.code-workspac/" * 3500
    result, [out] = run_patches(tmp_path, [{"type": "create_file", "path": path, "diff": "+x\n"}], answer="x\n")
    assert result.text == "done"
    assert out["status"] == "failed"
    assert "(path_too_long)" in out["output"]
    assert files_under(tmp_path) == {}


def test_open_dot_directories_are_configurable(tmp_path: Path) -> None:
    default = agent.Workspace(tmp_path)
    opened = agent.Workspace(tmp_path, allowed_dot_directories={".cargo"})
    for ws, path, refused in [
        (default, ".cargo/config.toml", True),
        (opened, ".cargo/config.toml", False),
        (opened, ".github/CODEOWNERS", True),  # the set replaces the default
        (opened, ".cargo/.envrc", True),  # an entry inside an open one still counts
        (agent.Workspace(tmp_path, allowed_dot_directories={".git"}), ".git/config", True),
    ]:
        place = ws.confine(path)
        assert isinstance(place, agent.PathRefusal) is refused, (path, place)
    place = default.confine(".CARGO./config.toml")
    assert isinstance(place, agent.PathRefusal)
    assert place.message == agent.protected_reasons(".cargo/x")[0]
    assert place.message.startswith("it is in a dot-directory")


def _validated(op: dict[str, Any]) -> Any:
    from openai.types.responses import ResponseApplyPatchToolCall  # noqa: PLC0415 - local to the helper

    return ResponseApplyPatchToolCall.model_validate(patch_item("call_f", op))


# --- Fuzzing -----------------------------------------------------------------

# Pieces that make the interesting paths: separators, dots, the names that
# matter, their folded spellings, and characters that break naive code.
PIECES = st.sampled_from(
    [
        "/", "\\", ".", "..", ".git", ".GIT", "git~1", ".envrc", ".vscode", "tasks.json", "work", "a", "b.py",
        ":", "::$DATA", " ", "\x00", "\n", "\r", "\x1b", "\u200c", "\u202e", "\ufeff", "\u0131", "\u212a",
        "\ud800", "\udfff", "~", "*", "\u2028", "\x85", "\U0001f600", ".cargo", ".github", "workflows",
    ]
)  # fmt: skip
PATHS = st.one_of(st.text(max_size=64), st.lists(PIECES, max_size=12).map("".join))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=PATHS)
def test_confine_never_raises_and_never_lets_a_protected_path_out(tmp_path: Path, path: str) -> None:
    ws = agent.Workspace(tmp_path)
    place = ws.confine(path)
    if isinstance(place, agent.PathRefusal):
        assert place.code in {"path_invalid", "path_too_long", "path_outside_workdir", "path_protected"}
        place.message.encode("utf-8")
        return
    root = tmp_path.resolve()
    assert place != root
    assert place.is_relative_to(root)
    relative = place.relative_to(root).as_posix()
    assert ws.protected(relative) == []
    assert ws.protected(path) == []
    # No control, format or separator character, no lone surrogate got through.
    assert not {unicodedata.category(c) for c in path} & {"Cc", "Cf", "Cs", "Zl", "Zp"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=PATHS, kind=st.sampled_from(["create_file", "update_file", "delete_file"]))
def test_any_apply_patch_path_ends_in_an_output_item(tmp_path: Path, path: str, kind: str) -> None:
    ws_root = tmp_path / "ws"
    ws_root.mkdir(exist_ok=True)
    gw = ScriptedGateway(lambda _tool, _args: ok("x\n"))
    decl = agent.declare(gw.list_tools(), apply_patch=True)
    op = {"type": kind, "path": path} | ({} if kind == "delete_file" else {"diff": "+x\n"})
    record = agent.execute_item(agent.ItemContext(gw, "s", decl, 1, agent.Workspace(ws_root)), _validated(op))
    out = PATCH_OUTPUT.validate_python(record.output_item)
    assert out["status"] in {"completed", "failed"}
    json.dumps(out, ensure_ascii=False).encode("utf-8")
    # Whatever was written stayed inside the workspace and off the protected list.
    assert [p.name for p in tmp_path.iterdir()] == ["ws"]
    ws = agent.Workspace(ws_root)
    for p in ws_root.rglob("*"):
        assert ws.protected(p.relative_to(ws_root).as_posix()) == []
