"""`airlock up` runs as root and writes into folders other users own (an
agent's token folder, the gateway's audit folder). These check that no file
operation there follows a link that user put in place."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest

from airlock.cli._layout import Identity, LayoutError, give, make_dir, read_private, write_private

ME = Identity("me", os.geteuid(), os.getegid())
# As root the write hands the file to another user, as `airlock up` does: a
# chown that followed a planted link would show on the victim.
AGENT = Identity("nobody", 65534, 65534) if os.geteuid() == 0 else ME


def test_write_private_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"root's file\n")
    folder = tmp_path / "agent"
    folder.mkdir()
    (folder / "token").symlink_to(victim)
    # The old fixed temp name, planted as a link and as a folder: neither is used.
    (folder / ".token.tmp").symlink_to(victim)
    write_private(folder / "token", b"secret\n", ME, mode=0o640)
    assert victim.read_bytes() == b"root's file\n"
    assert not (folder / "token").is_symlink()
    assert (folder / "token").read_bytes() == b"secret\n"
    assert (folder / "token").stat().st_mode & 0o777 == 0o640


def test_write_private_never_touches_a_file_swapped_in_while_it_writes(tmp_path: Path) -> None:
    """A racing owner of the folder renames links over every temp file it
    sees; the write still lands only in a file of its own."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"root's file\n")
    victim.chmod(0o644)
    folder = tmp_path / "agent"
    folder.mkdir()
    stop = threading.Event()

    def attacker() -> None:
        n = 0
        while not stop.is_set():
            for found in folder.iterdir():
                if found.name.endswith(".tmp"):
                    link = folder / f".x{n}"
                    n += 1
                    with contextlib.suppress(OSError):
                        link.symlink_to(victim)
                        link.replace(found)

    thread = threading.Thread(target=attacker)
    thread.start()
    try:
        for _ in range(200):
            # The race may make a write fail; it must never land elsewhere.
            with contextlib.suppress(OSError):
                write_private(folder / "token", b"secret\n", AGENT)
    finally:
        stop.set()
        thread.join()
    assert victim.read_bytes() == b"root's file\n"
    assert victim.stat().st_mode & 0o777 == 0o644
    assert victim.stat().st_uid == os.geteuid()


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "folder"])
def test_give_and_read_private_refuse_anything_but_a_file_of_its_own(tmp_path: Path, kind: str) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"root's file\n")
    victim.chmod(0o644)
    planted = tmp_path / "audit-signing.pem"
    if kind == "symlink":
        planted.symlink_to(victim)
    elif kind == "hardlink":
        os.link(victim, planted)
    else:
        planted.mkdir()
    with pytest.raises(LayoutError):
        give(planted, ME, 0o600)
    with pytest.raises(LayoutError):
        read_private(planted)
    assert victim.stat().st_mode & 0o777 == 0o644


def test_make_dir_refuses_a_folder_swapped_for_a_symlink(tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir(mode=0o755)
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "audit").symlink_to(elsewhere)
    with pytest.raises(LayoutError, match="symlink"):
        make_dir(tmp_path / "gateway" / "audit", ME, 0o700)
    assert elsewhere.stat().st_mode & 0o777 == 0o755
