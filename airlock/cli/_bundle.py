"""Builds the OPA bundle: the policy files plus the validated tool registry
as ``data.registry`` and the pinned images with their scans as
``data.images`` (airlock/cli/_images.py), with a content-hash revision so
every decision names exactly which policy, registry and image pins produced
it."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlock.cli._layout import Identity, give
from airlock.gateway import load_registry

BUNDLE_ROOTS = ("airlock", "registry", "images")


@dataclass(frozen=True)
class Bundle:
    path: Path
    revision: str


def _policy_files(policies: Path) -> list[Path]:
    files = [
        p
        for p in sorted(policies.rglob("*"))
        if p.is_file()
        and not p.name.endswith("_test.rego")
        and (p.suffix == ".rego" or p.name in ("data.json", "data.yaml", "data.yml"))
    ]
    if not any(p.suffix == ".rego" for p in files):
        raise FileNotFoundError(f"no .rego files under {policies}")
    return files


def build_bundle(
    opa: str,
    policies: Path,
    registry_path: Path,
    out: Path,
    signing_key: Path | None = None,
    *,
    capabilities: Path | None = None,
    images: dict[str, Any] | None = None,
) -> Bundle:
    """Validates the registry, stages policies + registry data, runs `opa build`
    (signed with ``signing_key``, RS256, when given; checked against
    ``capabilities``, so a policy using a denied builtin does not build). The
    output is written next to ``out`` and renamed into place, so a reader
    never sees half a bundle."""
    registry = load_registry(registry_path)
    registry_json = json.dumps(registry.as_policy_data(), sort_keys=True, indent=2)
    files = _policy_files(policies)
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(policies)).encode() + b"\0" + p.read_bytes() + b"\0")
    digest.update(registry_json.encode())
    images_json = json.dumps(images or {}, sort_keys=True, indent=2)
    digest.update(b"\0" + images_json.encode())
    revision = digest.hexdigest()[:16]
    with tempfile.TemporaryDirectory(prefix="airlock-bundle-") as tmp:
        stage = Path(tmp) / "bundle"
        for p in files:
            target = stage / p.relative_to(policies)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
        (stage / "registry").mkdir(parents=True, exist_ok=True)
        (stage / "registry" / "data.json").write_text(registry_json, encoding="utf-8")
        (stage / "images").mkdir(parents=True, exist_ok=True)
        (stage / "images" / "data.json").write_text(images_json, encoding="utf-8")
        (stage / ".manifest").write_text(
            json.dumps({"revision": revision, "roots": list(BUNDLE_ROOTS)}), encoding="utf-8"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        argv = [opa, "build", "--bundle", str(stage), "--output", str(partial)]
        if signing_key is not None:
            argv += ["--signing-key", str(signing_key), "--signing-alg", "RS256"]
        if capabilities is not None:
            argv += ["--capabilities", str(capabilities)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - pinned opa
        if proc.returncode != 0:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"opa build failed:\n{proc.stderr or proc.stdout}")
        partial.replace(out)
    return Bundle(out, revision)


def fingerprint(policies: Path, registry_path: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detection for the watcher: names, sizes and mtimes."""
    paths = [p for p in sorted(policies.rglob("*")) if p.is_file()] + [registry_path]
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p), st.st_size, st.st_mtime_ns))
    return tuple(out)


def ensure_signing_key(key: Path, owner: Identity) -> bytes:
    """The RSA key pair bundles are signed with: the private half is made
    once (kept after) and held by ``owner`` alone; returns the public half
    (PEM), the only part OPA gets."""
    if not key.exists():
        subprocess.run(  # noqa: S603 - fixed argv
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],  # noqa: S607
            check=True,
            capture_output=True,
        )
    give(key, owner, 0o600)
    return subprocess.run(  # noqa: S603 - fixed argv
        ["openssl", "pkey", "-in", str(key), "-pubout"],  # noqa: S607
        check=True,
        capture_output=True,
    ).stdout
