"""Which images the executor may run: those the tool registry's tools name
(``tools.<name>.image`` of registry_file), plus executor.yaml's
allowed_images. Anything else is refused (image_not_allowed), so a caller
holding the executor's socket and token still cannot run an arbitrary local
image. No grpc, no docker, and no gateway import: the registry is read as
plain YAML; the gateway validates it fully.

The file is re-read when it changes (its inode, size or mtime). If it cannot
be read or parsed, none of its images are allowed until it can (fail
closed); the error is logged once per version of the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from airlock.common import ConfigError

log = logging.getLogger("airlock.executor")

_Stamp = tuple[int, int, int]


class ImageAllowlist:
    def __init__(self, registry_file: str | None, extra: tuple[str, ...] = ()) -> None:
        self._path = Path(registry_file) if registry_file else None
        self._extra = frozenset(extra)
        self._stamp: _Stamp | None = None
        self._from_registry: frozenset[str] = frozenset()
        self._digests: dict[str, str] = {}
        self._warm: list[dict[str, Any]] = []
        self.problem: str | None = None
        """Why the registry's images are not allowed right now, if they are not."""

    def load(self) -> frozenset[str]:
        """Reads the registry at start-up; an unreadable one is a config error
        there (later, while running, it only refuses runs)."""
        self._refresh()
        if self.problem is not None:
            assert self._path is not None
            raise ConfigError(str(self._path), "registry_file", self.problem)
        return self.images

    @property
    def images(self) -> frozenset[str]:
        return self._from_registry | self._extra

    def registry_digest(self, image: str) -> str:
        """A digest of the registry entries that name ``image``: what a
        long-lived container of that image was built for. It changes when
        any of those entries changes (airlock/executor/sandboxes)."""
        self._refresh()
        return self._digests.get(image, "")

    def warm_classes(self) -> list[dict[str, Any]]:
        """The registry's network-less tools as (image, runtime, limits)
        documents, for prewarming the pool; limits as written (``256Mi``)."""
        self._refresh()
        return list(self._warm)

    def allows(self, image: str) -> bool:
        self._refresh()
        return image in self._from_registry or image in self._extra

    def _refresh(self) -> None:
        if self._path is None:
            return
        try:
            st = self._path.stat()
        except OSError as exc:
            self._fail(None, f"cannot read {self._path}: {exc.strerror}")
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            raw = yaml.safe_load(self._path.read_text(encoding="utf-8"))
            images = _images_of(raw)
        except (OSError, yaml.YAMLError, ValueError) as exc:
            self._fail(stamp, f"cannot use {self._path}: {exc}")
            return
        self._stamp, self._from_registry, self.problem = stamp, images, None
        self._digests, self._warm = _digests_of(raw), _warm_of(raw)
        log.info("tool registry %s names %d image(s): %s", self._path, len(images), ", ".join(sorted(images)))

    def _fail(self, stamp: _Stamp | None, problem: str) -> None:
        if problem != self.problem:
            log.error("%s; runs of its images are refused until it is fixed", problem)
        self._stamp, self._from_registry, self.problem = stamp, frozenset(), problem
        self._digests, self._warm = {}, []


def _images_of(raw: Any) -> frozenset[str]:
    tools = raw.get("tools") if isinstance(raw, dict) else None
    if not isinstance(tools, dict):
        raise ValueError("expected a mapping with a tools mapping")  # noqa: TRY004 - reported as a config problem
    # Hosted tools (web_search, ...) have no image: nothing of theirs runs here.
    return frozenset(
        entry["image"] for entry in tools.values() if isinstance(entry, dict) and isinstance(entry.get("image"), str)
    )


def _digests_of(raw: dict[str, Any]) -> dict[str, str]:
    by_image: dict[str, dict[str, Any]] = {}
    for name, entry in raw["tools"].items():
        if isinstance(entry, dict) and isinstance(entry.get("image"), str):
            by_image.setdefault(entry["image"], {})[str(name)] = entry
    return {
        image: hashlib.sha256(json.dumps(entries, sort_keys=True, default=str).encode()).hexdigest()[:32]
        for image, entries in by_image.items()
    }


def _warm_of(raw: dict[str, Any]) -> list[dict[str, Any]]:
    # A desktop tool (one with a display) runs in its session's own container,
    # whose keeper is the display: the pool's sleeping containers are no use to it.
    return [
        {"image": e["image"], "runtime": e.get("runtime", "runc"), "limits": e.get("limits") or {}}
        for e in raw["tools"].values()
        if isinstance(e, dict)
        and isinstance(e.get("image"), str)
        and not e.get("allowed_network")
        and not e.get("display")
    ]
