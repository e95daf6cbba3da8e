"""The ``airlock`` command line: ``up`` runs the local stack; ``call``,
``decide`` and ``tools`` are gateway clients; ``check`` validates offline."""

from __future__ import annotations

from airlock.cli._main import main

__all__ = ["main"]
