"""Shared pieces of Airlock: the generated wire API (``airlock.v1``), the
typed-YAML config loader both daemons use, and the ``airlock`` CLI
(``airlock.cli``). Nothing here imports the gateway or the executor."""

from __future__ import annotations

from airlock._config import ConfigError, load_yaml_config, parse_config, parse_duration_ms, parse_size

__all__ = ["ConfigError", "load_yaml_config", "parse_config", "parse_duration_ms", "parse_size"]
