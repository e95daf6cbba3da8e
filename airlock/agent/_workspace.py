"""The agent's workspace: the one directory ``apply_patch`` may change, and
the confinement every model-chosen path goes through before the agent reads
or writes anything there. The policy (``policies/airlock/arguments``:
``path_too_long``, ``path_outside_workdir``, ``path_protected``) refuses the
same paths before anything runs; this module refuses them again on the
agent's side, so a policy that is edited, wrong or in shadow mode still
cannot make the agent write ``.git/config`` (git would run its
``core.fsmonitor`` on the host), any other file that tools on this machine
run by themselves, or anything in a dot-directory that is not open.

A path is bounded first (``MAX_PATH_BYTES``, ``MAX_PATH_SEGMENTS``), so the
matching never costs more than a bounded path's, then matched the way the
policy matches it (``folded_segments``): ``\\`` is a separator, NTFS stream
suffixes and invisible characters are dropped, trailing dots and spaces are
trimmed and case is folded, so no spelling that Windows, macOS or a
case-insensitive filesystem would read as ``.git`` gets through. Nothing here
raises for a bad path: the answer is a ``PathRefusal`` the caller reports to
the model."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType

#: The policy's work dir (policies/airlock/arguments/data.yaml files.workdir):
#: absolute paths under it stand for the workspace.
POLICY_WORKDIR = PurePosixPath("/work")

GIT_REASON = "a .git directory holds configuration and hooks that git runs (core.fsmonitor, hooks/*)"

#: The policy's ``dot_directory_reason``: a path inside a dot-directory that
#: is not open, when no more specific reason names it.
DOT_DIRECTORY_REASON = "it is in a dot-directory, where tools keep configuration and programs they run by themselves"

#: The policy's ``max_path_bytes`` and ``max_path_segments``: a longer path
#: (UTF-8 bytes) or one with more segments (split on / and \\ as written) is
#: refused (``path_too_long``) before it is matched at all.
MAX_PATH_BYTES = 4096
MAX_PATH_SEGMENTS = 256

#: The dot-directories a path may go through, exactly as data.yaml
#: ``files.allowed_dot_directories`` ships them (a unit test keeps the two
#: equal); every other one is closed.
DEFAULT_ALLOWED_DOT_DIRECTORIES: frozenset[str] = frozenset({".github", ".changeset", ".well-known"})

#: Entry -> why, exactly as data.yaml ``files.protected`` ships it (a unit
#: test keeps the two equal; the comments on each entry live there).
DEFAULT_PROTECTED: Mapping[str, str] = MappingProxyType(
    {
        ".envrc": "direnv runs it when a shell enters the directory",
        ".direnv": "direnv puts programs from it first on PATH",
        ".vscode/tasks.json": "VS Code runs its tasks, some on folder open",
        ".vscode/settings.json": "VS Code runs the interpreters and tools it names",
        ".vscode/launch.json": "VS Code runs its programs and pre-launch tasks",
        ".vscode/mcp.json": "VS Code starts the MCP servers it lists as local programs",
        "*.code-workspace": "VS Code reads tasks, launch configurations and settings from it",
        ".devcontainer": "dev container tools run its lifecycle commands, initializeCommand on the host",
        ".devcontainer.json": "dev container tools run its lifecycle commands, initializeCommand on the host",
        ".idea": "JetBrains IDEs run the configurations and startup tasks it holds",
        ".venv": "editors run the interpreter found in it, with its .pth files",
        "node_modules": "editor extensions load and run code from it",
        ".npmrc": "npm reads programs to run (script-shell, node-options) from it",
        ".yarnrc": "yarn runs the program named by yarn-path in it",
        ".yarnrc.yml": "yarn runs the file named by yarnPath in it as yarn itself",
        ".pnpmfile.cjs": "pnpm runs its hooks on install",
        ".mise.toml": "mise runs its hooks when a shell enters the directory",
        "mise.toml": "mise runs its hooks when a shell enters the directory",
        "mise.*.toml": "mise runs its hooks when a shell enters the directory",
        ".mise.*.toml": "mise runs its hooks when a shell enters the directory",
        "mise/config.toml": "mise runs its hooks when a shell enters the directory",
        ".tool-versions": "asdf and mise put the programs it names on PATH",
        ".python-version": "pyenv picks the interpreter that `python` runs from it",
        ".nvmrc": "nvm and fnm pick the node that `node` runs from it",
        ".node-version": "fnm and nodenv pick the node that `node` runs from it",
        ".ruby-version": "rbenv and chruby pick the ruby that `ruby` runs from it",
        ".pre-commit-config.yaml": "pre-commit runs the hooks it lists on git commit",
        ".pre-commit-hooks.yaml": "pre-commit runs the hooks it defines for every repository using this one",
        ".husky": "git runs the hooks in it (husky sets core.hooksPath)",
        "lefthook.*": "lefthook runs the commands it lists on git commit and other hooks",
        "lefthook-local.*": "lefthook runs the commands it lists on git commit and other hooks",
        ".lefthook*": "lefthook runs the commands and scripts it holds on git commit and other hooks",
        ".overcommit.yml": "overcommit runs the hooks it configures on git commit",
        ".gitattributes": "git runs the filter, diff and merge drivers it selects",
        ".gitmodules": "git submodule fetches and checks out what it names",
        ".gitconfig": "git runs the programs it names (core.fsmonitor, core.pager)",
        ".hg": "Mercurial runs the hooks in .hg/hgrc",
        ".bashrc": "bash runs it at start-up",
        ".bash_profile": "bash runs it at login",
        ".profile": "login shells run it",
        ".zshrc": "zsh runs it at start-up",
        ".zshenv": "zsh runs it at every start",
        ".bash_login": "bash runs it at login",
        ".zprofile": "zsh runs it at login",
        ".zlogin": "zsh runs it at login",
        ".ssh": "ssh runs the commands in its config and trusts its keys",
        ".mcp.json": "Claude Code starts the MCP servers it lists as local programs",
        ".claude": "Claude Code runs the hooks in its settings and obeys the permissions there",
        ".cursor": "Cursor starts the MCP servers in mcp.json, runs hooks.json and follows its rules",
        ".zed": "Zed runs the tasks, language servers and formatters it names",
        ".exrc": "vim sources it from the current directory with 'exrc' set",
        ".nvimrc": "neovim sources it from the current directory with 'exrc' set",
        ".nvim.lua": "neovim runs it from the current directory with 'exrc' set",
        ".pdbrc": "pdb runs its commands (Python statements too) when it starts here",
        ".irbrc": "irb runs it when it starts in the directory",
        ".pryrc": "pry runs it when it starts in the directory",
        ".rprofile": "R runs .Rprofile when it starts in the directory",
        "conftest.py": "pytest imports and runs it when collecting tests",
        "__pycache__": "Python runs the cached bytecode in it instead of the source",
        ".env": "tools load its variables (PATH, LD_PRELOAD, NODE_OPTIONS) into the programs they run",
        "bunfig.toml": "bun runs the preload scripts it names",
        ".bunfig.toml": "bun runs the preload scripts it names",
        ".gitpod.*": "Gitpod builds its image and runs its tasks when a workspace opens",
        ".github/workflows": "GitHub Actions runs them on push, with the repository's secrets",
        ".gitlab-ci.yml": "GitLab CI runs its jobs on push, with the project's CI variables",
        ".travis.yml": "Travis CI runs its jobs on push, with the repository's secrets",
        ".drone.yml": "Drone runs its pipeline on push, with the repository's secrets",
        "azure-pipelines.yml": "Azure Pipelines runs it on push, with the pipeline's secrets",
        "bitbucket-pipelines.yml": "Bitbucket Pipelines runs it on push, with the repository's variables",
        "jenkinsfile": "Jenkins runs the Jenkinsfile's pipeline on push, with its credentials",
    }
)

#: Characters HFS+/APFS ignore in names and that render as nothing (the
#: policy's ``ignorable``): ".g\u200cit" is .git there.
_IGNORABLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")
#: Letters a case-insensitive filesystem may fold onto the ASCII letters of a
#: protected name (the policy's ``case_folds``), applied before ``lower()``.
_CASE_FOLDS = str.maketrans(
    {
        "\u0130": "i",
        "\u0131": "i",
        "\u017f": "s",
        "\u212a": "k",
        "\u00df": "ss",
        "\u1e9e": "ss",
        "\ufb00": "ff",
        "\ufb01": "fi",
        "\ufb02": "fl",
        "\ufb03": "ffi",
        "\ufb04": "ffl",
        "\ufb05": "st",
        "\ufb06": "st",
    }
)
_GIT_SHORT_NAME = re.compile(r"git~[0-9]+")
#: The policy's ``valid_protected_entry``: segments written as they are
#: matched (lower-case ASCII letters, digits, ``._~-``, ``*`` within one
#: segment, never ``**``), none empty or ending in a dot.
_VALID_ENTRY = re.compile(r"[a-z0-9._~*-]*[a-z0-9_~*-](/[a-z0-9._~*-]*[a-z0-9_~*-])*")
#: Unicode categories a path may not contain: control characters (NUL among
#: them, which no file name can hold), format characters (bidi overrides and
#: invisible characters disguise a name), lone surrogates (not encodable) and
#: line/paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: A file read as an apply_patch original may not be larger: far above the
#: gateway's arguments limit, so it only keeps a huge file out of memory.
MAX_ORIGINAL_BYTES = 1024 * 1024


def fold_segment(raw: str) -> str:
    """One path segment as a case-insensitive, Unicode-folding filesystem
    may read it (policy: ``fold_segment``)."""
    visible = _IGNORABLE.sub("", raw.split(":", 1)[0])
    return visible.rstrip(". ").translate(_CASE_FOLDS).lower()


def folded_segments(path: str) -> list[str]:
    """The path's folded segments; empty, "." and ".." segments disappear
    (policy: ``folded_segments``)."""
    return [s for s in (fold_segment(raw) for raw in path.replace("\\", "/").split("/")) if s not in ("", ".")]


def valid_entry(entry: str) -> bool:
    return _VALID_ENTRY.fullmatch(entry) is not None and "**" not in entry


def _segment_pattern(segment: str) -> re.Pattern[str]:
    # `*` matches any run of characters within the segment; the rest is literal.
    return re.compile(".*".join(re.escape(part) for part in segment.split("*")), re.DOTALL)


@dataclass(frozen=True)
class _Entry:
    text: str
    why: str
    segments: tuple[re.Pattern[str], ...]

    def matches(self, segments: list[str]) -> bool:
        n = len(self.segments)
        return any(
            all(p.fullmatch(s) for p, s in zip(self.segments, segments[start : start + n], strict=True))
            for start in range(len(segments) - n + 1)
        )


def _compile(entries: Mapping[str, str]) -> tuple[_Entry, ...]:
    compiled = []
    for text, why in entries.items():
        if not valid_entry(text):
            raise ValueError(
                f"protected path entry {text!r} is not a valid pattern"
                " (/-separated lower-case segments of a-z 0-9 . _ ~ - and *, none ending in a dot)"
            )
        compiled.append(_Entry(text, why, tuple(_segment_pattern(s) for s in text.split("/"))))
    return tuple(compiled)


def protected_reasons(
    path: str,
    entries: Mapping[str, str] = DEFAULT_PROTECTED,
    allowed_dot_directories: Collection[str] = DEFAULT_ALLOWED_DOT_DIRECTORIES,
) -> list[str]:
    """Why ``path`` is protected (the policy's ``protected``), empty when it
    is not: a .git segment (or its NTFS short name GIT~1), a match of one of
    ``entries`` at any depth, or else a directory segment that starts with a
    dot and is not in ``allowed_dot_directories``. Unbounded: callers bound
    the path first (``path_too_long``)."""
    return _protected(path, _compile(entries), frozenset(allowed_dot_directories))


def path_too_long(path: str) -> bool:
    """Whether ``path`` is beyond the bounds (the policy's ``path_too_long``)."""
    segments = path.count("/") + path.count("\\") + 1
    # surrogatepass: a lone surrogate counts 3 bytes, as the U+FFFD OPA reads.
    return segments > MAX_PATH_SEGMENTS or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES


def _protected(path: str, entries: tuple[_Entry, ...], allowed_dot_directories: frozenset[str]) -> list[str]:
    segments = folded_segments(path)
    reasons = [GIT_REASON] if any(s == ".git" or _GIT_SHORT_NAME.fullmatch(s) for s in segments) else []
    reasons.extend(f'matches "{e.text}": {e.why}' for e in entries if e.matches(segments))
    # Every segment but the last names a directory; the last may be a file.
    if not reasons and any(s.startswith(".") and s not in allowed_dot_directories for s in segments[:-1]):
        reasons.append(DOT_DIRECTORY_REASON)
    return reasons


@dataclass(frozen=True)
class PathRefusal:
    """Why the workspace will not touch a path. ``code`` is a stable string:
    ``path_invalid``, ``path_too_long``, ``path_outside_workdir``,
    ``path_protected`` or ``path_unreadable``."""

    code: str
    message: str


def _text_refusal(path: object) -> PathRefusal | None:
    """Why ``path`` is refused for what it is as text, before it is matched
    or resolved; None when it is not."""
    if not isinstance(path, str):
        return PathRefusal("path_invalid", "the path is not a string")
    # First, so nothing after it (the scan, folding, matching) sees a long path.
    if path_too_long(path):
        return PathRefusal(
            "path_too_long", f"the path has more than {MAX_PATH_BYTES} bytes or {MAX_PATH_SEGMENTS} segments"
        )
    bad = next((c for c in path if unicodedata.category(c) in _REFUSED_CATEGORIES), None)
    if bad is not None:
        return PathRefusal("path_invalid", f"the path contains the character U+{ord(bad):04X}")
    return None


@dataclass(frozen=True)
class Workspace:
    """The directory apply_patch edits. ``extra_protected`` (entry -> why, or
    just entries) extends ``DEFAULT_PROTECTED``; entries use the policy's
    syntax (``/``-separated lower-case segments, ``*`` within a segment; a
    directory entry protects everything under it; matched at any depth) and
    an invalid one raises ``ValueError`` here, not later.
    ``allowed_dot_directories`` are the dot-directories paths may go through
    (folded names, as the policy's ``files.allowed_dot_directories``)."""

    root: Path
    extra_protected: Mapping[str, str] | tuple[str, ...] = ()
    allowed_dot_directories: Collection[str] = DEFAULT_ALLOWED_DOT_DIRECTORIES
    _entries: tuple[_Entry, ...] = field(init=False, repr=False, compare=False)
    _open: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        extra = self.extra_protected
        if not isinstance(extra, Mapping):
            extra = dict.fromkeys(extra, "protected by this agent")
        object.__setattr__(self, "_entries", _compile({**DEFAULT_PROTECTED, **extra}))
        object.__setattr__(self, "_open", frozenset(self.allowed_dot_directories))

    def protected(self, path: str) -> list[str]:
        """Why ``path`` (relative to the workspace) is protected; empty when not."""
        return _protected(path, self._entries, self._open)

    def confine(self, path: str) -> Path | PathRefusal:  # noqa: PLR0911 - one return per way a path is refused
        """The file ``path`` names inside the workspace, or why not. Absolute
        paths under /work map to the workspace (that is what the policy
        judged); paths beyond the bounds, ``..``, other absolute paths,
        symlinks leading out, the workspace itself and protected paths (as
        written, and again after symlinks are resolved) are refused. Never
        raises."""
        if (refusal := _text_refusal(path)) is not None:
            return refusal
        if reasons := self.protected(path):
            return PathRefusal("path_protected", "; ".join(reasons))
        p = PurePosixPath(path)
        if p.is_absolute():
            if not p.is_relative_to(POLICY_WORKDIR):
                return PathRefusal("path_outside_workdir", f"an absolute path outside {POLICY_WORKDIR}")
            p = p.relative_to(POLICY_WORKDIR)
        if not p.parts or ".." in p.parts:
            return PathRefusal("path_outside_workdir", "the path is empty, the workspace itself, or has a .. segment")
        try:
            root = self.root.resolve()
            target = (root / p).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            return PathRefusal("path_invalid", f"the path cannot be resolved ({type(exc).__name__})")
        if target == root or not target.is_relative_to(root):
            return PathRefusal("path_outside_workdir", "the path leads out of the workspace (a symlink)")
        # A symlink inside the workspace may lead to a protected place (cfg -> .git).
        if reasons := self.protected(target.relative_to(root).as_posix()):
            return PathRefusal("path_protected", "; ".join(reasons) + " (after resolving symlinks)")
        return target


def confine(workspace: Path, path: str) -> Path | None:
    """``Workspace(workspace).confine(path)`` as a path or None."""
    place = Workspace(workspace).confine(path)
    return place if isinstance(place, Path) else None
