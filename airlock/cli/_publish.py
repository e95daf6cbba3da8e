"""``airlock policy publish``: the one way a policy change reaches OPA.

Publishing is an explicit step by an operator: it needs the bundle-signing
key, which only the operator (root, or the user who started a single-uid
stack) can read. It validates the registry, builds the policies against the
restricted capabilities (airlock/cli/_opa.py), signs the bundle, and puts it
where the bundle server serves it; OPA verifies the signature and activates
it within a couple of seconds. The same step hands the registry to the
gateway and the executor, so all three judge the same entries.

``airlock up --dev`` adds a watcher that publishes every edit for you;
without --dev, editing policy files changes nothing until someone publishes.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from airlock.cli._bundle import Bundle, build_bundle, fingerprint
from airlock.cli._layout import Layout, copy_public
from airlock.cli._opa import write_capabilities

#: How often the --dev watcher checks policy files and the registry for edits.
WATCH_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Published:
    revision: str
    bundle: Path


def publish(
    opa: str, layout: Layout, policies: Path, registry: Path, *, allow_builtins: Iterable[str] = ()
) -> Published:
    """Builds, signs and publishes; raises (RuntimeError, OSError, ValueError)
    without changing what is served when the policies or registry are bad."""
    with tempfile.TemporaryDirectory(prefix="airlock-publish-") as tmp:
        caps = write_capabilities(opa, Path(tmp) / "capabilities.json", allow_builtins)
        staged = Path(tmp) / "bundle.tar.gz"
        bundle: Bundle = build_bundle(opa, policies, registry, staged, layout.bundle_signing_key, capabilities=caps)
        # Registry first: a decision made with the new bundle must find the
        # same entries in the gateway (the gateway also accepts the previous
        # registry's entries for the moment OPA takes to activate).
        copy_public(registry, layout.gateway_registry)
        copy_public(registry, layout.executor_registry)
        copy_public(staged, layout.bundle)
    return Published(bundle.revision, layout.bundle)


class DevWatcher:
    """``airlock up --dev``: publishes every edit of the policy folder or the
    registry. An edit that does not build is reported and not published; the
    last good bundle keeps serving."""

    def __init__(self, opa: str, layout: Layout, policies: Path, registry: Path, *, revision: str) -> None:
        self._args = (opa, layout, policies, registry)
        self._seen = fingerprint(policies, registry)
        self.revision = revision
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        opa, layout, policies, registry = self._args
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                now = fingerprint(policies, registry)
            except OSError:
                continue
            if now == self._seen:
                continue
            self._seen = now
            try:
                published = publish(opa, layout, policies, registry)
            except (RuntimeError, OSError, ValueError) as exc:
                print(f"airlock up: policy change NOT published (last good bundle stays): {exc}", flush=True)
                continue
            if published.revision != self.revision:
                self.revision = published.revision
                print(f"airlock up: published policy bundle {published.revision}", flush=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
