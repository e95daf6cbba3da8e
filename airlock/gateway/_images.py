"""The pinned images and their scans, as the gateway reads them: a JSON file
``airlock policy publish`` writes next to the published registry (the same
document the signed bundle carries as ``data.images``; airlock/cli/_images.py
makes it). Per image reference: the engine id it was pinned to and the last
scan's summary, or null when never scanned.

The gateway puts a tool's entry in the policy input (``input.image``) and
sends the digest to the executor, which runs only that id. The file is
re-read when it changes. A missing file means nothing is pinned (the input's
``image`` is null and no digest is sent); one that cannot be parsed (counts
by severity that are not integers >= 0 included) is logged and treated the
same, so the policy's stale-scan rule decides and a broken scan never reads
as a clean one. The file is not signed: when the bundle carries pins, the
policy requires this file's digest to be the bundle's (image_pin_mismatch)
and judges the bundle's scan, so editing or removing the file cannot unpin
an image or hide a finding. No grpc.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("airlock.gateway")

IMAGES_FILE = "images.json"
SCAN_KEYS = ("critical", "high", "medium", "low", "scanned_at", "db_updated_at")
#: The counts by severity: each an integer >= 0 (a null or a string would
#: compare as "no critical findings" in the policy).
COUNT_KEYS = SCAN_KEYS[:4]


class ImagePins:
    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._pins: dict[str, dict[str, Any]] = {}

    @classmethod
    def beside(cls, registry_file: Path) -> ImagePins:
        """The file published next to the registry the gateway reads."""
        return cls(registry_file.with_name(IMAGES_FILE))

    def facts(self, image: str) -> dict[str, Any] | None:
        """``input.image`` for a tool of ``image``: ``{ref, digest, scan}``
        (scan null when never scanned), or None when it is not pinned."""
        if not image:
            return None
        self._refresh()
        pin = self._pins.get(image)
        if pin is None:
            return None
        return {"ref": image, **pin}

    def _refresh(self) -> None:
        if self._path is None:
            return
        try:
            st = self._path.stat()
        except FileNotFoundError:
            self._stamp, self._pins = None, {}
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            self._pins = _parse(json.loads(self._path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            log.error(  # noqa: TRY400 - the reason is the message; a traceback says nothing more
                "image pins %s unusable (%s): no tool image counts as pinned or scanned", self._path, exc
            )
            self._pins = {}
        self._stamp = stamp


def _parse(raw: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise ValueError("expected a mapping of image references")  # noqa: TRY004 - reported as unusable
    out: dict[str, dict[str, Any]] = {}
    for ref, entry in raw.items():
        digest = entry.get("digest") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise ValueError(f"{ref}: no sha256 digest")
        scan = entry.get("scan")
        if scan is not None:
            if not isinstance(scan, dict) or any(k not in scan for k in SCAN_KEYS):
                raise ValueError(f"{ref}: scan needs {', '.join(SCAN_KEYS)}")
            for key in COUNT_KEYS:
                count = scan[key]
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise ValueError(f"{ref}: scan.{key} must be an integer >= 0, not {count!r}")
            for key in SCAN_KEYS[4:]:
                if not isinstance(scan[key], str):
                    raise ValueError(  # noqa: TRY004 - reported as unusable, as every other flaw
                        f"{ref}: scan.{key} must be a time (RFC 3339), not {scan[key]!r}"
                    )
            scan = {k: scan[k] for k in SCAN_KEYS}
        out[str(ref)] = {"digest": digest, "scan": scan}
    return out
