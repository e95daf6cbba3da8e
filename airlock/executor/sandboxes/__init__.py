"""Sandboxes that outlive one call: the warm pool and session sandboxes.

A one-shot run (the runner's cold path) gets a container whose PID 1 runs
the tool and which is removed when the tool exits. The containers here are
started ahead of any call and run no tool of their own:

- containers.py: what such a container is (its class, the keeper process,
  its fingerprint), how a call runs in it (``docker exec`` as the sandbox
  uid) and how one is checked before it is handed out;
- pool.py: idle containers per class, claimed by ephemeral calls (which are
  then destroyed) and by the first call of a session; refilled in the
  background;
- sessions.py: the container of one (principal, session, class, network),
  reused by that session's calls one at a time, ended at its idle TTL, its
  lifetime, on request or at shutdown;
- events.py: the session started/ended events the gateway drains into its
  audit log.

No grpc here; the runner (airlock/executor/_runner.py) wires them in.
"""

from __future__ import annotations

from airlock.common.wire import SessionInfo
from airlock.executor.sandboxes.containers import ContainerClass, Sandbox
from airlock.executor.sandboxes.events import EventsLost, SessionEvent, SessionEvents
from airlock.executor.sandboxes.pool import WarmPool
from airlock.executor.sandboxes.sessions import Session, SessionTable

__all__ = [
    "ContainerClass",
    "EventsLost",
    "Sandbox",
    "Session",
    "SessionEvent",
    "SessionEvents",
    "SessionInfo",
    "SessionTable",
    "WarmPool",
]
