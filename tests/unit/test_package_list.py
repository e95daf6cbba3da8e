"""pyproject.toml lists every package (two live outside airlock/ as package
data), so a new subpackage cannot be left out of the wheel by accident."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_on_disk_is_listed() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "airlock").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    mapped = set(config["package-dir"])
    assert set(config["packages"]) == on_disk | mapped
    for package, folder in config["package-dir"].items():
        assert (REPO / folder / "__init__.py").is_file(), package
