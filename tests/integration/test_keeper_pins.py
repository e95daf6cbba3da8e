"""Long-lived sandbox containers (pool, session, a call's own) and image
pinning, on real Docker (docs/images.md, "Pinning"): a keeper container is
created from its image's id, resolved once, never from the tag, so a retag
that lands between the fingerprint and the create cannot put another image
behind a container; and a pinned start makes its container from the pinned
digest whatever the tag names by then. The retag is done by a runtime that
moves a throwaway tag right before it creates (the race, made certain).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from airlock.executor._config import ExecutorConfig
from airlock.executor._docker import DockerRuntime
from airlock.executor._model import RunSpec
from airlock.executor._options import ceilings, clamp, load_seccomp_profile
from airlock.executor.sandboxes.containers import ContainerClass
from airlock.executor.sandboxes.factory import DockerSandboxes

pytestmark = pytest.mark.integration
BASE = "airlock/sandbox-python:4"
#: Throwaway names of this test's own: the shared image is never retagged.
TAG = "airlock-test/keeper-pins:1"
OTHER = "airlock-test/keeper-pins-other:1"


def _docker(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _image_id(ref: str) -> str:
    return _docker("image", "inspect", "--format", "{{.Id}}", ref)


@pytest.fixture(scope="module")
def images() -> Iterator[tuple[str, str]]:
    """(pinned, other): two ids; TAG names the pinned one."""
    _docker("tag", BASE, TAG)
    _docker("build", "-q", "-t", OTHER, "-", stdin=f"FROM {BASE}\nLABEL airlock.test=keeper-pins-other\n")
    try:
        yield _image_id(TAG), _image_id(OTHER)
    finally:
        subprocess.run(["docker", "rmi", TAG, OTHER], capture_output=True, check=False)


class Retagging(DockerRuntime):
    """Moves TAG to ``to`` just before each create: what a retag racing the
    start would do."""

    def __init__(self, url: str) -> None:
        super().__init__(url, 2)
        self.to = ""
        self.created: list[str] = []

    def create(self, options: dict[str, Any]) -> str:
        if self.to:
            _docker("tag", self.to, TAG)
        container_id = super().create(options)
        self.created.append(container_id)
        return container_id


@pytest.fixture
def made() -> Iterator[tuple[DockerSandboxes, Retagging]]:
    cfg = ExecutorConfig(socket="/nonexistent", token_file="/nonexistent", allowed_images=(TAG,))
    runtime = Retagging(cfg.docker_url)
    factory = DockerSandboxes(
        runtime,
        cfg,
        seccomp_profile=load_seccomp_profile(cfg),
        ceilings=ceilings(cfg),
        registry_digest=lambda _image: "registry",
        lifetime_ms=60_000,
    )
    try:
        yield factory, runtime
    finally:
        for container_id in runtime.created:
            subprocess.run(["docker", "rm", "-f", container_id], capture_output=True, check=False)
        _docker("tag", BASE, TAG)


def _cls(cfg_ceilings: Any) -> ContainerClass:
    spec = RunSpec(run_id="r", tool="python", image=TAG, argv=("true",))
    return ContainerClass.of(TAG, "runc", clamp(spec, cfg_ceilings))


def _container_image(container_id: str) -> str:
    return _docker("container", "inspect", "--format", "{{.Image}}", container_id)


def test_a_retag_during_a_pool_start_cannot_change_its_image(
    images: tuple[str, str], made: tuple[DockerSandboxes, Retagging]
) -> None:
    pinned, other = images
    factory, runtime = made
    cls = _cls(ceilings(ExecutorConfig(socket="/x", token_file="/y")))
    runtime.to = other  # the tag moves between the fingerprint and the create
    sandbox = factory.start(cls, "pool")
    # Made from the id the fingerprint was computed from, not the moved tag.
    assert sandbox.image_id == pinned
    assert _container_image(sandbox.container_id) == pinned
    runtime.to = ""
    # The tag now names another image: that fingerprint differs, so the
    # pool's check replaces the container as stale rather than hand it out.
    assert factory.fingerprint(cls) != sandbox.fingerprint
    _docker("tag", pinned, TAG)
    assert factory.fingerprint(cls) == sandbox.fingerprint


def test_a_pinned_start_runs_the_digest_whatever_the_tag_names(
    images: tuple[str, str], made: tuple[DockerSandboxes, Retagging]
) -> None:
    pinned, other = images
    factory, runtime = made
    cls = _cls(ceilings(ExecutorConfig(socket="/x", token_file="/y")))
    # The executor checked the tag against the pin; then the tag moved.
    runtime.to = other
    for kind in ("session", "call"):
        sandbox = factory.start(cls, kind, image_id=pinned)
        assert sandbox.image_id == pinned
        assert _container_image(sandbox.container_id) == pinned
    # Unpinned, the same start takes whatever the tag names at that moment,
    # and says so (a pinned call would not take it: Sandbox.image_id).
    runtime.to = ""
    sandbox = factory.start(cls, "session")
    assert sandbox.image_id == other == _container_image(sandbox.container_id)
