"""Airlock: a security gateway for AI agents that execute code.

One import namespace, in layers (bottom to top; import-linter enforces them,
see the [tool.importlinter] contracts in pyproject.toml):

- ``airlock.v1``: the generated wire API (protobuf and gRPC stubs);
- ``airlock.common``: what more than one process needs (typed config,
  audit-log format, TLS, secret files, daemon plumbing, the wire adapters);
- ``airlock.gateway``, ``airlock.executor``, ``airlock.agent``: one package
  per process (the agent loop runs in the agent's process), which never
  import each other;
- ``airlock.cli``: the ``airlock`` command, on top of everything.

Default policies and the tool registry ship as package data
(``airlock.policies``, ``airlock.deploy``), from the policies/ and deploy/
folders of the source tree.
"""

from __future__ import annotations

__version__ = "0.1.0"
