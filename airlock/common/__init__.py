"""Shared code: what more than one of the gateway, the executor, the agent
and the CLI need. Nothing here imports any of them."""

from __future__ import annotations

from airlock.common._config import ConfigError, load_yaml_config, parse_config, parse_duration_ms, parse_size

__all__ = ["ConfigError", "load_yaml_config", "parse_config", "parse_duration_ms", "parse_size"]
