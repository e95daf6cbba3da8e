"""``airlock policy publish``: the one way a policy change reaches OPA.

Publishing is an explicit step by an operator: it needs the bundle-signing
key, which only the operator (root, or the user who started a single-uid
stack) can read. It validates the registry, builds the policies against the
restricted capabilities (airlock/cli/_opa.py), signs the bundle, and puts it
where the bundle server serves it; OPA verifies the signature and activates
it. The same step hands the registry to the gateway and the executor, so all
three judge the same entries, and the image pins and scans to the gateway
(airlock/cli/_images.py; the bundle carries them as data.images). With a stack running, publishing then waits
until OPA reports the new revision in a decision's provenance, and fails
(NotActivatedError) if it does not within ACTIVATE_TIMEOUT_S: a revocation
that OPA has not taken must not look done.

``airlock up --dev`` adds a watcher that publishes every edit for you;
without --dev, editing policy files changes nothing until someone publishes.
"""

from __future__ import annotations

import http.client
import json
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from airlock.cli._bundle import Bundle, build_bundle, fingerprint
from airlock.cli._images import policy_data
from airlock.cli._layout import Layout, copy_public
from airlock.cli._opa import write_capabilities
from airlock.cli._stackconf import opa_query
from airlock.gateway._images import IMAGES_FILE

#: How often the --dev watcher checks policy files and the registry for edits.
WATCH_INTERVAL_S = 1.0
#: How long publishing waits for the running OPA to report the new revision
#: (it polls every 1 to 2 s, so a healthy stack takes a few seconds at most).
ACTIVATE_TIMEOUT_S = 15.0
#: The document read for its provenance: the gateway's own revision probe
#: (airlock/gateway/_main.py REVISION_PROBE_PATH), which its OPA token may query.
REVISION_PROBE = "airlock/config/shadow"


class NotActivatedError(RuntimeError):
    """The bundle is published, but the running OPA did not report it active in time."""


@dataclass(frozen=True)
class Published:
    revision: str
    bundle: Path


def publish(
    opa: str,
    layout: Layout,
    policies: Path,
    registry: Path,
    *,
    allow_builtins: Iterable[str] = (),
    activate_timeout_s: float = ACTIVATE_TIMEOUT_S,
) -> Published:
    """Builds, signs and publishes; raises (RuntimeError, OSError, ValueError)
    without changing what is served when the policies or registry are bad.
    With a stack running (its stack.json exists; `airlock up` publishes
    before it starts OPA, with none), it then waits for OPA to activate the
    revision and raises NotActivatedError if it does not."""
    with tempfile.TemporaryDirectory(prefix="airlock-publish-") as tmp:
        caps = write_capabilities(opa, Path(tmp) / "capabilities.json", allow_builtins)
        staged = Path(tmp) / "bundle.tar.gz"
        images = policy_data(layout.home)
        bundle: Bundle = build_bundle(
            opa, policies, registry, staged, layout.bundle_signing_key, capabilities=caps, images=images
        )
        # Registry first: a decision made with the new bundle must find the
        # same entries in the gateway (the gateway also accepts the previous
        # registry's entries for the moment OPA takes to activate). The image
        # pins go beside the gateway's copy: its input.image and the digest
        # the executor must find (the bundle carries the same as data.images).
        copy_public(registry, layout.gateway_registry)
        copy_public(registry, layout.executor_registry)
        stage_images = Path(tmp) / IMAGES_FILE
        stage_images.write_text(json.dumps(images, indent=2, sort_keys=True), encoding="utf-8")
        copy_public(stage_images, layout.gateway_registry.with_name(IMAGES_FILE))
        copy_public(staged, layout.bundle)
    if layout.stack_file.exists():
        wait_active(layout, bundle.revision, activate_timeout_s)
    return Published(bundle.revision, layout.bundle)


def active_revision(layout: Layout) -> str:
    """The revision of the bundle the running OPA decides with, from a
    decision's provenance, over OPA's socket with the gateway's token (only
    the operator can read it)."""
    if not layout.opa_socket.exists():
        raise FileNotFoundError(f"no socket at {layout.opa_socket}")
    token = (layout.gateway_dir / "opa.token").read_text(encoding="utf-8").strip()
    body = opa_query(layout, token, f"{REVISION_PROBE}?provenance=true")
    bundles = body.get("provenance", {}).get("bundles", {}) if isinstance(body, dict) else {}
    revisions = sorted(str(b.get("revision", "")) for b in bundles.values() if isinstance(b, dict))
    return ",".join(revisions)


def wait_active(layout: Layout, revision: str, timeout_s: float) -> None:
    """Returns once OPA reports ``revision`` active; else NotActivatedError."""
    deadline = time.monotonic() + timeout_s
    seen = "nothing (OPA did not answer)"
    while True:
        try:
            seen = f"revision {active_revision(layout) or '(none)'}"
        except (OSError, ValueError, http.client.HTTPException) as exc:
            seen = f"nothing (OPA did not answer: {exc})"
        if seen == f"revision {revision}":
            return
        if time.monotonic() >= deadline:
            raise NotActivatedError(
                f"policy bundle {revision} is published, but OPA did not activate it within {timeout_s:.0f} s: "
                f"it reports {seen}. Decisions still use the old policy; check OPA's log for "
                "'Bundle load failed' and the bundle server, then publish again"
            )
        time.sleep(0.2)


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
            except NotActivatedError as exc:
                print(f"airlock up: {exc}", flush=True)
                continue
            except (RuntimeError, OSError, ValueError) as exc:
                print(f"airlock up: policy change NOT published (last good bundle stays): {exc}", flush=True)
                continue
            if published.revision != self.revision:
                self.revision = published.revision
                print(f"airlock up: published policy bundle {published.revision}", flush=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
