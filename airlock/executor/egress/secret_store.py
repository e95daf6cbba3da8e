"""Where the secrets the egress proxy injects into requests come from.

A decision can ask the proxy to add a secret (say, a GitHub token) to a
sandbox's requests to some host, so the sandbox itself never holds it. The
proxy looks the secret up by name in a SecretStore: FileSecrets (the
executor's own 0600 YAML file, ``egress.secrets_file``), EnvSecrets
(``AIRLOCK_EGRESS_SECRET_<NAME>`` variables, ``egress.secrets_env``), or
both, file first (ChainedSecrets). Every store is read once, when it is
made: the executor restarts to pick up a changed secret.

Values go into HTTP header fields, so each is checked here, at start: a
non-empty string with no CR, LF or NUL (which would split or end a header)
of at most MAX_VALUE_BYTES. A value is never logged, shown by repr or put
in an exception message; errors name the file and key, or the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from airlock.executor._errors import EgressSetupError
from airlock.executor.egress._private import read_private_file

#: A secret's name: what a decision names it by.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,62}")
MAX_VALUE_BYTES = 8 * 1024
#: A secrets file larger than this is refused unread.
MAX_FILE_BYTES = 1024 * 1024
SECRETS_FILE_VERSION = 1
DEFAULT_ENV_PREFIX = "AIRLOCK_EGRESS_SECRET_"
_FORBIDDEN = ("\r", "\n", "\0")


class SecretStore(Protocol):
    """Secrets by name; None for a name the store does not have."""

    def get(self, name: str) -> str | None: ...

    def names(self) -> frozenset[str]: ...


def value_problem(value: object) -> str | None:
    """Why ``value`` cannot be injected, or None. The answer never quotes it."""
    if not isinstance(value, str):
        return f"expected a string value, got {type(value).__name__} (quote it)"
    if not value:
        return "empty value"
    if any(c in value for c in _FORBIDDEN):
        return "the value contains CR, LF or NUL (it goes into an HTTP header)"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        # A lone surrogate: from a \ud800 escape in YAML, or from bytes in
        # the environment that are not UTF-8.
        return "the value is not valid Unicode text"
    if size > MAX_VALUE_BYTES:
        return f"the value is longer than {MAX_VALUE_BYTES} bytes"
    return None


class _Values:
    """A frozen name -> value map whose repr shows names only."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self._names = frozenset(values)

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def names(self) -> frozenset[str]:
        return self._names


class FileSecrets:
    """``{version: 1, secrets: {name: value}}`` from a file only we can read."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._values = _Values(_load_file(path))

    def __repr__(self) -> str:
        return f"FileSecrets(path={str(self._path)!r}, names={sorted(self._values.names())!r})"

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def names(self) -> frozenset[str]:
        return self._values.names()


class EnvSecrets:
    """``<prefix><NAME>`` variables: ``github_token`` is
    ``AIRLOCK_EGRESS_SECRET_GITHUB_TOKEN``. Read once, at construction; a
    variable with the prefix whose name or value is unusable is refused."""

    def __init__(self, environ: Mapping[str, str] = os.environ, prefix: str = DEFAULT_ENV_PREFIX) -> None:
        self._prefix = prefix
        values: dict[str, str] = {}
        for variable, value in environ.items():
            if not variable.startswith(prefix):
                continue
            suffix = variable[len(prefix) :]
            name = suffix.lower()
            # Upper case only, so one name has one variable.
            if suffix != name.upper() or not NAME_PATTERN.fullmatch(name):
                raise EgressSetupError(
                    f"environment variable {variable}: after {prefix} expected an upper-case secret name "
                    f"matching {NAME_PATTERN.pattern.upper()}"
                )
            problem = value_problem(value)
            if problem is not None:
                raise EgressSetupError(f"environment variable {variable}: {problem}")
            values[name] = value
        self._values = _Values(values)

    def __repr__(self) -> str:
        return f"EnvSecrets(prefix={self._prefix!r}, names={sorted(self._values.names())!r})"

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def names(self) -> frozenset[str]:
        return self._values.names()


class ChainedSecrets:
    """Several stores; for each name the first store that has it wins."""

    def __init__(self, *stores: SecretStore) -> None:
        self._stores = stores

    def __repr__(self) -> str:
        return f"ChainedSecrets({', '.join(repr(s) for s in self._stores)})"

    def get(self, name: str) -> str | None:
        for store in self._stores:
            value = store.get(name)
            if value is not None:
                return value
        return None

    def names(self) -> frozenset[str]:
        return frozenset().union(*(store.names() for store in self._stores))


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader refusing duplicate keys, which it would otherwise resolve
    silently to the last one: a name given twice is a mistake to report."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise _DuplicateKeyError(None, None, "duplicate key", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read(path: Path) -> bytes:
    data = read_private_file(path, "egress secrets file", MAX_FILE_BYTES)
    assert data is not None  # not missing_ok
    return data


def _load_file(path: Path) -> dict[str, str]:
    where = f"egress secrets file {path}"
    return _check_document(_parse_yaml(_read(path), where), where)


def _parse_yaml(data: bytes, where: str) -> Any:
    try:
        raw: Any = yaml.load(data.decode("utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except UnicodeDecodeError:
        raise EgressSetupError(f"{where}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        # The parser's own message quotes the offending line, which may
        # hold a secret: say only where.
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = "a duplicate key" if isinstance(exc, _DuplicateKeyError) else "not valid YAML"
        raise EgressSetupError(f"{where}: {what}{at}") from None
    return raw


def _check_document(raw: Any, where: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise EgressSetupError(f"{where}: expected a mapping with version and secrets at the top level")
    unknown = sorted(str(key) for key in raw if key not in {"version", "secrets"})
    if unknown:
        raise EgressSetupError(f"{where}: unknown key {unknown[0]!r} (expected version, secrets)")
    version = raw.get("version")
    if isinstance(version, bool) or version != SECRETS_FILE_VERSION:
        raise EgressSetupError(f"{where}: version: expected {SECRETS_FILE_VERSION}, got {version!r}")
    entries = raw.get("secrets")
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        raise EgressSetupError(f"{where}: secrets: expected a mapping of name to value")
    values: dict[str, str] = {}
    for index, (name, value) in enumerate(entries.items(), start=1):
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            # Not quoted: a value pasted where its name belongs would be.
            raise EgressSetupError(
                f"{where}: secrets: the name of entry {index} is not a string matching {NAME_PATTERN.pattern}"
            )
        problem = value_problem(value)
        if problem is not None:
            raise EgressSetupError(f"{where}: secrets.{name}: {problem}")
        values[name] = value
    return values
