"""Sandbox images an operator can vouch for (`airlock images`): each image the
tool registry names is built (or found) and pinned by its engine id, the
content digest Docker gives it; Trivy writes its SBOM and scans it against a
vulnerability database the operator brings in (air-gapped: nothing is
downloaded). Everything lives under ``$AIRLOCK_HOME/images/``:

- ``records.json``: per image reference, the digest, size and build time;
- ``<hex digest>/sbom.cdx.json``: the CycloneDX SBOM of that digest;
- ``<hex digest>/scan.json`` and ``report.json``: the scan summary (counts by
  severity, when, with which DB) and Trivy's full report.

``policy_data`` joins them into what ``airlock policy publish`` puts in the
signed bundle (``data.images``) and hands the gateway (its ``tool.image``
input); the executor then runs only the digest the policy decided with
(``image_mismatch``). Neighbours: _bundle.py and _publish.py (publishing),
the gateway's _images.py (reading the published copy).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from airlock.cli._paths import tools_dir

#: The build script of each image the project builds (under deploy/images/),
#: by repository; other registry images must already be on the engine.
BUILD_SCRIPTS = {"airlock/sandbox-python": "build-sandbox.sh", "airlock/sandbox-desktop": "build-desktop.sh"}
RECORDS = "records.json"
SEVERITIES = ("critical", "high", "medium", "low", "unknown")
#: How long one Trivy run may take (a first scan of the desktop image fills its cache).
TRIVY_TIMEOUT_S = 900


class ImageError(RuntimeError):
    """An image step failed; ``code`` is stable, the message says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Record:
    """One pinned image."""

    image: str
    """The reference the registry names (repository:tag)."""
    digest: str
    """The engine's image id (``sha256:...``) when it was built or pinned."""
    size: int
    """Bytes, as the engine reports them."""
    built_at: str
    """RFC 3339, UTC."""


def images_dir(home: Path) -> Path:
    return home / "images"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def registry_images(registry: Path) -> dict[str, list[str]]:
    """Each image the registry names, with the tools that use it."""
    raw = yaml.safe_load(registry.read_text(encoding="utf-8"))
    tools = raw.get("tools") if isinstance(raw, dict) else None
    if not isinstance(tools, dict):
        raise ImageError("registry_invalid", f"{registry}: expected a mapping with a tools mapping")
    out: dict[str, list[str]] = {}
    for name, entry in tools.items():
        if isinstance(entry, dict) and isinstance(entry.get("image"), str):
            out.setdefault(entry["image"], []).append(str(name))
    return out


def inspect(image: str) -> tuple[str, int] | None:
    """The engine's id and size of ``image``, or None when it is not there."""
    try:
        proc = subprocess.run(  # noqa: S603 - fixed argv
            ["docker", "image", "inspect", "--format", "{{.Id}} {{.Size}}", image],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:  # no docker CLI here: no engine to ask
        return None
    if proc.returncode != 0:
        return None
    digest, size = proc.stdout.split()
    return digest, int(size)


def read_records(home: Path) -> dict[str, Record]:
    path = images_dir(home) / RECORDS
    if not path.exists():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {ref: Record(image=ref, **fields) for ref, fields in raw.get("images", {}).items()}


def _write_json(path: Path, doc: Any) -> None:
    # Readable by all: pins and scans are public facts (the gateway gets them
    # through `policy publish`), never secrets.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    partial.chmod(0o644)
    partial.replace(path)


def write_records(home: Path, records: dict[str, Record]) -> None:
    doc = {
        "version": 1,
        "images": {r.image: {"digest": r.digest, "size": r.size, "built_at": r.built_at} for r in records.values()},
    }
    _write_json(images_dir(home) / RECORDS, doc)


def build(home: Path, registry: Path, scripts: Path | None = None) -> list[Record]:
    """Builds each registry image that has a build script (an existing tag is
    kept: the scripts are idempotent), then records every registry image's
    id. An image with no script and not on the engine is an error."""
    scripts = scripts or registry.parent / "images"
    records = read_records(home)
    out = []
    for image in sorted(registry_images(registry)):
        script = BUILD_SCRIPTS.get(image.rsplit(":", 1)[0])
        if script is not None and (scripts / script).exists():
            subprocess.run([str(scripts / script), image], check=True)  # noqa: S603 - our own script
        found = inspect(image)
        if found is None:
            raise ImageError("image_missing", f"image {image} is not on the engine and has no build script; build it")
        digest, size = found
        old = records.get(image)
        built_at = old.built_at if old is not None and old.digest == digest else _now()
        records[image] = Record(image, digest, size, built_at)
        out.append(records[image])
    write_records(home, records)
    return out


def pin(home: Path, registry: Path) -> tuple[list[Record], list[str]]:
    """Records the id the engine has now of every registry image, building
    nothing: a deployment's pinning step (``airlock deploy compose-init``).
    Returns the pins and the images the engine does not have (left unpinned:
    a call of theirs fails ``image_missing`` at the executor anyway)."""
    records = read_records(home)
    pinned, missing = [], []
    for image in sorted(registry_images(registry)):
        found = inspect(image)
        if found is None:
            missing.append(image)
            continue
        digest, size = found
        old = records.get(image)
        built_at = old.built_at if old is not None and old.digest == digest else _now()
        records[image] = Record(image, digest, size, built_at)
        pinned.append(records[image])
    write_records(home, records)
    return pinned, missing


def find_trivy() -> str | None:
    for c in (os.environ.get("AIRLOCK_TRIVY"), str(tools_dir() / "trivy"), shutil.which("trivy")):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


def _need_trivy() -> str:
    trivy = find_trivy()
    if trivy is None:
        raise ImageError("trivy_missing", "trivy not found (run scripts/bootstrap, or set AIRLOCK_TRIVY)")
    return trivy


def db_metadata(db_dir: Path) -> dict[str, Any]:
    """The operator's DB's metadata.json, checked enough that Trivy will use it."""
    meta, db = db_dir / "metadata.json", db_dir / "trivy.db"
    if not meta.is_file() or not db.is_file():
        raise ImageError(
            "scan_db_missing",
            f"no Trivy vulnerability DB in {db_dir} (need trivy.db and metadata.json; docs/images.md: bringing one in)",
        )
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("UpdatedAt"), str):
            raise ValueError("no UpdatedAt")  # noqa: TRY004, TRY301 - one message for every bad metadata
    except (ValueError, OSError) as exc:
        raise ImageError("scan_db_corrupt", f"the Trivy DB's {meta} is unreadable: {exc}") from exc
    return doc


def _trivy(home: Path, db_dir: Path | None, image: str, *extra: str) -> str:
    """One offline Trivy run against the local engine's ``image``, with the
    stack's own cache: a vulnerability scan against the operator's DB
    (``db_dir``, never updated), or with no DB an SBOM (packages only)."""
    trivy = _need_trivy()
    cache = images_dir(home) / "trivy-cache"
    cache.mkdir(parents=True, exist_ok=True)
    if db_dir is not None:
        _link_db(cache / "db", db_dir.resolve())
    argv = [
        trivy, "image", "--quiet", "--cache-dir", str(cache), "--skip-db-update", "--skip-java-db-update",
        "--offline-scan", "--skip-check-update", "--skip-vex-repo-update", "--image-src", "docker",
        *(["--scanners", "vuln"] if db_dir is not None else []), *extra, image,
    ]  # fmt: skip
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=TRIVY_TIMEOUT_S)  # noqa: S603
    except subprocess.TimeoutExpired as exc:
        raise ImageError("scan_failed", f"trivy did not finish scanning {image} in {TRIVY_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        # Trivy's last line is "<time>\tFATAL\tFatal error\t<what>": keep <what>.
        tail = why[-1].split("\t")[-1] if why else f"exit status {proc.returncode}"
        code = "scan_db_corrupt" if "db" in tail.lower() else "scan_failed"
        raise ImageError(code, f"trivy could not scan {image}: {tail}")
    return proc.stdout


def _link_db(link: Path, db_dir: Path) -> None:
    """Trivy reads its DB from CACHE/db: a link to the operator's folder."""
    if link.is_symlink() and link.readlink() == db_dir:
        return
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    link.symlink_to(db_dir)


def _pinned(home: Path, target: str, registry: Path) -> Record:
    """A tool name or an image reference to its record."""
    records = read_records(home)
    by_tool = {t: img for img, tools in registry_images(registry).items() for t in tools}
    image = by_tool.get(target, target)
    rec = records.get(image)
    if rec is None:
        raise ImageError("image_unpinned", f"{image} has no record; run `airlock images build` first")
    return rec


def digest_dir(home: Path, digest: str) -> Path:
    return images_dir(home) / digest.removeprefix("sha256:")


def sbom(home: Path, target: str, registry: Path) -> Path:
    """Writes the CycloneDX SBOM (its packages; no DB is needed) of a tool's
    (or an image's) pinned digest."""
    rec = _pinned(home, target, registry)
    _check_current(rec)
    out = _trivy(home, None, rec.image, "--format", "cyclonedx")
    path = digest_dir(home, rec.digest) / "sbom.cdx.json"
    _write_json(path, json.loads(out))
    return path


def _check_current(rec: Record) -> None:
    found = inspect(rec.image)
    if found is None or found[0] != rec.digest:
        raise ImageError(
            "image_mismatch",
            f"{rec.image} on the engine is {found[0] if found else 'missing'}, not the pinned {rec.digest}; "
            "run `airlock images build` again",
        )


def summarize(report: dict[str, Any]) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for result in report.get("Results") or []:
        for vuln in result.get("Vulnerabilities") or []:
            sev = str(vuln.get("Severity", "UNKNOWN")).lower()
            counts[sev if sev in counts else "unknown"] += 1
    return counts


def scan(home: Path, registry: Path, db_dir: Path, *, pinned_only: bool = False) -> list[dict[str, Any]]:
    """Scans every pinned registry image; stores and returns the summaries.
    Any failure stops the run with one message (what was scanned before is
    kept). An image with no pin is an error, or skipped with ``pinned_only``
    (a deployment's rescan: compose-init said it left it unpinned)."""
    meta = db_metadata(db_dir)
    _need_trivy()
    records = read_records(home)
    out = []
    for image in sorted(registry_images(registry)):
        rec = records.get(image)
        if rec is None and pinned_only:
            continue
        if rec is None:
            raise ImageError("image_unpinned", f"{image} has no record; run `airlock images build` first")
        _check_current(rec)
        report = json.loads(_trivy(home, db_dir, image, "--format", "json"))
        summary = {
            "image": image,
            "digest": rec.digest,
            **summarize(report),
            "scanned_at": _now(),
            "db_version": meta.get("Version"),
            "db_updated_at": meta["UpdatedAt"],
        }
        where = digest_dir(home, rec.digest)
        _write_json(where / "report.json", report)
        _write_json(where / "scan.json", summary)
        out.append(summary)
    return out


def read_scan(home: Path, digest: str) -> dict[str, Any] | None:
    path = digest_dir(home, digest) / "scan.json"
    if not path.exists():
        return None
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def policy_data(home: Path) -> dict[str, Any]:
    """``data.images`` of the bundle and the gateway's copy: per image
    reference, the pinned digest and its scan summary (null: never scanned)."""
    out: dict[str, Any] = {}
    for ref, rec in read_records(home).items():
        s = read_scan(home, rec.digest)
        scan_doc = None
        if s is not None:
            scan_doc = {k: s[k] for k in (*SEVERITIES[:4], "scanned_at", "db_updated_at")}
        out[ref] = {"digest": rec.digest, "size": rec.size, "scan": scan_doc}
    return out


def _verdicts(opa: str, policies: Path, registry: Path, home: Path, profile: str) -> dict[str, list[dict[str, Any]]]:
    """What the image gate says of each registry tool for ``profile``, from
    the policy files (the same bundle `policy publish` would build)."""
    # Imported here: the gateway's registry code, which `images build` does not need.
    from airlock.cli._bundle import build_bundle  # noqa: PLC0415
    from airlock.gateway._images import ImagePins  # noqa: PLC0415

    data = policy_data(home)
    with tempfile.TemporaryDirectory(prefix="airlock-images-") as tmp:
        pins_file = Path(tmp) / "images.json"
        pins_file.write_text(json.dumps(data), encoding="utf-8")
        pins = ImagePins(pins_file)
        docs = [
            {
                "principal": {"id": "airlock-images", "profile": profile},
                "call": {"tool": tool},
                "image": pins.facts(image),
                "request": {"time": _now()},
            }
            for image, tools in registry_images(registry).items()
            for tool in tools
        ]
        bundle = build_bundle(opa, policies, registry, Path(tmp) / "bundle.tar.gz", images=data)
        (Path(tmp) / "input.json").write_text(json.dumps({"docs": docs}), encoding="utf-8")
        query = (
            "{d.call.tool: [r | x := data.airlock.images.deny with input as d; some r in x] | some d in input.docs}"
            ' ; shadow := object.get(data.airlock.config, "shadow", {})'
        )
        proc = subprocess.run(  # noqa: S603 - pinned opa, our arguments
            [opa, "eval", "--bundle", str(bundle.path), "--input", str(Path(tmp) / "input.json"), "--format", "json",
             query],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        raise ImageError("policy_failed", f"opa eval failed:\n{proc.stderr or proc.stdout}")
    result = json.loads(proc.stdout)["result"][0]
    verdicts: dict[str, list[dict[str, Any]]] = result["expressions"][0]["value"]
    shadow = result["bindings"].get("shadow") or {}
    for reasons in verdicts.values():
        for r in reasons:
            r["shadow"] = bool(
                shadow.get("all") is True
                or r.get("package") in (shadow.get("packages") or [])
                or r.get("code") in (shadow.get("codes") or [])
            )
    return verdicts


def listing(opa: str, policies: Path, registry: Path, home: Path, profile: str) -> list[dict[str, Any]]:
    """One row per registry image: pinned digest, what the engine has now,
    size, the last scan, and the image gate's verdict per tool for ``profile``."""
    records = read_records(home)
    verdicts = _verdicts(opa, policies, registry, home, profile)
    rows = []
    for image, tools in sorted(registry_images(registry).items()):
        rec = records.get(image)
        found = inspect(image)
        scan_doc = read_scan(home, rec.digest) if rec is not None else None
        rows.append(
            {
                "image": image,
                "tools": sorted(tools),
                "digest": rec.digest if rec is not None else None,
                "engine_digest": found[0] if found else None,
                "matches": rec is not None and found is not None and found[0] == rec.digest,
                "size": rec.size if rec is not None else (found[1] if found else None),
                "scan": scan_doc,
                "policy": {
                    "profile": profile,
                    "verdicts": {
                        t: [("would_deny " if r["shadow"] else "deny ") + r["code"] for r in verdicts.get(t, [])]
                        or ["ok"]
                        for t in sorted(tools)
                    },
                },
            }
        )
    return rows


def db_dir(home: Path, given: Path | None) -> Path:
    """The operator's Trivy DB folder: the flag, $AIRLOCK_TRIVY_DB, or the stack's own."""
    if given is not None:
        return given
    env = os.environ.get("AIRLOCK_TRIVY_DB")
    return Path(env) if env else images_dir(home) / "trivy-db"


def describe(row: dict[str, Any]) -> str:
    """One line of `airlock check` per image."""
    digest = row["digest"] or "not pinned (airlock images build)"
    if row["digest"] and not row["matches"]:
        digest += f" (engine has {row['engine_digest'] or 'nothing'}: image_mismatch)"
    size = f"{row['size'] / 1e6:.0f} MB" if row["size"] else "size unknown"
    scan_doc = row["scan"]
    if scan_doc is None:
        scanned = "never scanned"
    else:
        counts = ", ".join(f"{scan_doc[k]} {k}" for k in SEVERITIES[:4])
        scanned = f"{counts} (scanned {scan_doc['scanned_at']}, DB {scan_doc['db_updated_at']})"
    verdicts = "; ".join(f"{t}: {', '.join(v)}" for t, v in row["policy"]["verdicts"].items())
    return f"image {row['image']}: {digest}, {size}, {scanned}; profile {row['policy']['profile']}: {verdicts}"


class Rescanner:
    """``airlock up --rescan-hours N``: scans the registry's images at start
    and every N hours after, and publishes after each scan so the policy
    decides with it. A failed scan is reported and stores nothing: the last
    good scans stay, and profiles that ask for fresh scans deny once they
    are too old (image_scan_stale)."""

    def __init__(
        self,
        every_s: float,
        scan: Callable[[], object],
        publish: Callable[[], object],
        say: Callable[[str], None] = print,
    ) -> None:
        self._every_s, self._scan, self._publish, self._say = every_s, scan, publish, say
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="image-rescanner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._scan()
                self._publish()
            except ImageError as exc:
                self._say(f"airlock up: image rescan failed ({exc.code}; the last scans stay): {exc}")
            except (RuntimeError, OSError, ValueError) as exc:
                self._say(f"airlock up: image rescan not published (the last scans stay): {exc}")
            else:
                self._say("airlock up: rescanned the registry's images and published the results")
            if self._stop.wait(self._every_s):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
