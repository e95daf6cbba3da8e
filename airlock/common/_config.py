"""Typed YAML configuration: the wire shape is parsed into frozen dataclasses.

Both daemons and the tool registry use this one loader so that every config
file rejects unknown keys and bad values the same way, with a message naming
the file, the key path and what was expected.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file is unreadable or does not match its schema."""

    code = "config_invalid"

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


def load_yaml_config(
    path: Path | None,
    cls: type[T],
    *,
    versions: tuple[int, ...] = (1,),
    env: Mapping[str, str] | None = None,
    env_prefix: str | None = None,
) -> T:
    """Reads ``path`` and parses it into ``cls``; ``version`` must be supported.

    With ``env_prefix`` (12-factor deployments), variables named
    ``<prefix><KEY>[__<SUBKEY>...]`` in ``env`` override single keys of the
    file (or make up the whole config when ``path`` is None): each value is
    read as YAML, and a name that is not a key of the schema is refused like
    an unknown key in the file, naming the variable."""
    source = str(path) if path is not None else "environment"
    raw: Any = {"version": versions[-1]}
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(source, "", f"cannot read: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(source, "", f"not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "expected a mapping at the top level")
    if env_prefix is not None:
        overrides = env_overrides(env if env is not None else {}, env_prefix, cls)
        if overrides:
            source = f"{source} + environment ({', '.join(sorted(name for name, _, _ in overrides))})"
            for _name, keys, value in overrides:
                _set_key(raw, keys, value)
    version = raw.get("version")
    if isinstance(version, bool) or version not in versions:
        expected = " or ".join(str(v) for v in versions)
        raise ConfigError(source, "version", f"expected {expected}, got {version!r}")
    return parse_config(raw, cls, source=source)


#: Variables with this suffix after the prefix name the config file itself.
CONFIG_PATH_VARIABLE = "CONFIG"


def env_overrides(env: Mapping[str, str], prefix: str, cls: type[Any]) -> list[tuple[str, tuple[str, ...], Any]]:
    """(variable, key path, value) for every ``<prefix>...`` variable but the
    config path; raises ConfigError for a name the schema does not have or a
    value that is not YAML."""
    out = []
    for name in sorted(env):
        if not name.startswith(prefix) or name == prefix + CONFIG_PATH_VARIABLE:
            continue
        keys = tuple(part.lower() for part in name[len(prefix) :].split("__"))
        where = f"environment variable {name}"
        if any(not k for k in keys):
            raise ConfigError(where, "", "empty key; separate levels with exactly two underscores")
        _check_key_path(cls, keys, where)
        try:
            value = yaml.safe_load(env[name]) if env[name].strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(where, ".".join(keys), f"not valid YAML: {exc}") from exc
        out.append((name, keys, value))
    return out


def _check_key_path(cls: Any, keys: tuple[str, ...], where: str) -> None:
    tp: Any = cls
    for depth, part in enumerate(keys):
        origin = get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            concrete = [o for o in get_args(tp) if o is not type(None)]
            tp = concrete[0] if len(concrete) == 1 else tp
        if get_origin(tp) in (dict, Mapping):
            tp = get_args(tp)[1]  # a mapping's keys are the user's own names
            continue
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(where, ".".join(keys), f"{'.'.join(keys[:depth])} has no keys below it")
        hints = get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        if part not in names:
            raise ConfigError(
                where, ".".join(keys[: depth + 1]), f"unknown key; expected one of: {', '.join(sorted(names))}"
            )
        tp = hints[part]


def _set_key(raw: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = raw
    for part in keys[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[keys[-1]] = value


def config_path(explicit: Path | None, env: Mapping[str, str], prefix: str) -> Path | None:
    """``--config`` if given, else ``<prefix>CONFIG`` from the environment."""
    if explicit is not None:
        return explicit
    named = env.get(prefix + CONFIG_PATH_VARIABLE)
    return Path(named) if named else None


def to_document(obj: Any, *, version: int | None = None) -> Any:
    """The YAML wire shape of a config dataclass: what parse_config reads
    back into an equal object. Fields left at their defaults are omitted, so
    a generated file shows only what was chosen."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        doc: dict[str, Any] = {} if version is None else {"version": version}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            if f.default_factory is not dataclasses.MISSING and value == f.default_factory():
                continue
            doc[f.name] = to_document(value)
        return doc
    if isinstance(obj, Mapping):
        return {str(k): to_document(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [to_document(v) for v in obj]
    return obj


def parse_config(raw: Any, cls: type[T], *, source: str, key: str = "") -> T:
    """Parses an already-loaded mapping into the dataclass ``cls``."""
    value = _parse(raw, cls, source, key)
    return typing.cast("T", value)


def _type_name(tp: Any) -> str:  # noqa: PLR0911 - one answer per kind of type
    if tp is type(None):
        return "null"
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin in (dict, Mapping):
        return f"a mapping of {_type_name(get_args(tp)[1])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is Any:
        return "any value"
    return {int: "an integer", str: "a string", bool: "true or false", float: "a number"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _join(key: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{key}[{part}]"
    return f"{key}.{part}" if key else part


def _parse(raw: Any, tp: Any, source: str, key: str) -> Any:  # noqa: PLR0911, PLR0912, C901 - one branch per supported type keeps the loader flat
    origin = get_origin(tp)
    if tp is Any:
        return raw
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if raw is None and type(None) in options:
            return None
        concrete = [o for o in options if o is not type(None)]
        if len(concrete) == 1 and dataclasses.is_dataclass(concrete[0]):
            # An optional section: report the section's own precise error.
            return _parse(raw, concrete[0], source, key)
        errors: list[ConfigError] = []
        for option in options:
            try:
                return _parse(raw, option, source, key)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(source, key, f"expected {_type_name(tp)}, got {raw!r}")
    if tp is type(None):
        if raw is None:
            return None
        raise ConfigError(source, key, f"expected null, got {raw!r}")
    if origin is Literal:
        if raw in get_args(tp):
            return raw
        raise ConfigError(source, key, f"expected {_type_name(tp)}, got {raw!r}")
    if dataclasses.is_dataclass(tp):
        return _parse_dataclass(raw, tp, source, key)
    if origin in (list, tuple):
        if not isinstance(raw, list):
            raise ConfigError(source, key, f"expected {_type_name(tp)}, got {raw!r}")
        (item_tp, *_) = get_args(tp)
        return tuple(_parse(item, item_tp, source, _join(key, i)) for i, item in enumerate(raw))
    if origin in (dict, Mapping):
        if not isinstance(raw, dict):
            raise ConfigError(source, key, f"expected {_type_name(tp)}, got {raw!r}")
        key_tp, val_tp = get_args(tp)
        out: dict[Any, Any] = {}
        for k, v in raw.items():
            out[_parse(k, key_tp, source, key)] = _parse(v, val_tp, source, _join(key, str(k)))
        return types.MappingProxyType(out)
    if tp is bool:
        if isinstance(raw, bool):
            return raw
    elif tp is int:
        # bool is an int in Python; "true" is never a valid count.
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
    elif tp is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
    elif tp is str:
        if isinstance(raw, str):
            return raw
    else:  # pragma: no cover - a programming error in a config dataclass
        raise TypeError(f"unsupported config type {tp!r}")
    raise ConfigError(source, key, f"expected {_type_name(tp)}, got {raw!r}")


def _parse_dataclass(raw: Any, cls: Any, source: str, key: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(source, key, f"expected a mapping, got {raw!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    allowed = set(fields) | ({"version"} if not key else set())
    # YAML turns keys like `on:` into booleans; sort by text so any key type reports.
    unknown = sorted((k for k in raw if k not in allowed), key=str)
    if unknown:
        expected = ", ".join(sorted(fields))
        raise ConfigError(source, _join(key, str(unknown[0])), f"unknown key; expected one of: {expected}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = _parse(raw[name], hints[name], source, _join(key, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(source, _join(key, name), f"required key missing; expected {_type_name(hints[name])}")
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(source, key or "(top level)", str(exc)) from exc


_SIZE_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
}
_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def parse_size(value: int | str) -> int:
    """Bytes from ``1048576``, ``"256Mi"``, ``"256m"`` (docker style is decimal-free: m = MiB)."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must be >= 0, got {value}")
        return value
    text = value.strip().lower()
    digits = text.rstrip("kmgib")
    unit = text[len(digits) :]
    # Docker's --memory uses "m" for MiB; users copy values from there, so the
    # short forms are binary too.
    unit = {"k": "ki", "m": "mi", "g": "gi", "b": ""}.get(unit, unit)
    if not digits.isdigit() or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size like 256Mi or 1048576, got {value!r}")
    return int(digits) * _SIZE_UNITS[unit]


def parse_duration_ms(value: int | str) -> int:
    """Milliseconds from ``1500``, ``"1500ms"``, ``"10s"``, ``"2m"``, ``"1h"``."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"duration must be >= 0, got {value}")
        return value
    text = value.strip().lower()
    for unit in ("ms", "s", "m", "h"):
        number = text.removesuffix(unit)
        if number != text and number.isdigit():
            return int(number) * _DURATION_UNITS[unit]
    raise ValueError(f"expected a duration like 10s or 500ms, got {value!r}")
