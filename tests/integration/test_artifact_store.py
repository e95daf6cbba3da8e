"""The artifact stores, one suite for both backends: the local directory
with real SQLite, and S3 against a real SeaweedFS server (with credentials)
started by the fixture on loopback. Every refusal has its own code and
leaves nothing visible; the S3 backend survives its server stopping
mid-put."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.seaweed import Seaweed

from airlock.gateway.artifacts import (
    ArtifactNameError,
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactTooLargeError,
    ArtifactTruncatedError,
    ChecksumMismatchError,
    LocalStore,
    PutRequest,
    Quota,
    QuotaExceededError,
    StoreUnavailableError,
)
from airlock.gateway.artifacts._store import owner_digest
from airlock.gateway.artifacts.s3 import S3Store

pytestmark = pytest.mark.integration
QUOTA = Quota(max_bytes=1 << 20, max_count=16, max_artifact_bytes=256 * 1024)


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    server = Seaweed(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    server: Seaweed = request.getfixturevalue("seaweed")
    # A prefix per test: the suite shares one server.
    return S3Store(server.settings(prefix=f"t-{uuid.uuid4().hex[:8]}"), spool_dir=str(tmp_path))


def _put(store: ArtifactStore, principal: str, name: str, data: bytes, **kw: object) -> object:
    req = PutRequest(principal=principal, name=name, **kw)  # type: ignore[arg-type]
    chunks = [data[i : i + 7000] for i in range(0, len(data), 7000)] or [b""]
    return store.put(req, chunks, QUOTA)


def _read(store: ArtifactStore, principal: str, artifact_id: str) -> bytes:
    return b"".join(store.read(principal, artifact_id))


def test_put_stat_read_round_trip(store: ArtifactStore) -> None:
    data = bytes(range(256)) * 300
    record = store.put(
        PutRequest(principal="alice", name="summary.csv", session="s1", media_type="text/csv"),
        [data[:1000], data[1000:]],
        QUOTA,
    )
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    assert record.size == len(data)
    assert record.ref() == {
        "id": record.id,
        "name": "summary.csv",
        "sha256": record.sha256,
        "size": len(data),
        "media_type": "text/csv",
    }
    assert store.stat("alice", record.id) == record
    assert _read(store, "alice", record.id) == data
    assert store.usage("alice") == (len(data), 1)


def test_an_empty_artifact_is_an_artifact(store: ArtifactStore) -> None:
    record = store.put(PutRequest(principal="alice", name="empty"), [], QUOTA)
    assert record.size == 0
    assert _read(store, "alice", record.id) == b""


def test_another_principals_artifact_does_not_exist(store: ArtifactStore) -> None:
    record = store.put(PutRequest(principal="alice", name="mine"), [b"secret"], QUOTA)
    for op in (store.stat, store.read, store.delete):
        with pytest.raises(ArtifactNotFoundError):
            op("bob", record.id)
    assert store.list_artifacts("bob") == []
    assert _read(store, "alice", record.id) == b"secret"


def test_list_by_session_and_prefix(store: ArtifactStore) -> None:
    a = store.put(PutRequest(principal="alice", name="plot_1.png", session="s1"), [b"1"], QUOTA)
    b = store.put(PutRequest(principal="alice", name="plot_2.png", session="s2"), [b"2"], QUOTA)
    c = store.put(PutRequest(principal="alice", name="data%.csv", session="s1"), [b"3"], QUOTA)
    assert [r.id for r in store.list_artifacts("alice")] == [a.id, b.id, c.id]
    assert [r.id for r in store.list_artifacts("alice", session="s1")] == [a.id, c.id]
    assert [r.id for r in store.list_artifacts("alice", prefix="plot_")] == [a.id, b.id]
    # % and _ are plain characters, not patterns.
    assert [r.id for r in store.list_artifacts("alice", prefix="data%")] == [c.id]
    assert store.list_artifacts("alice", prefix="data_") == []


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "../x", "a\\b", "nul\x00byte", "tab\tname", "x" * 256, "é" * 128, "e\u0301"]
)
def test_a_bad_name_is_refused_and_nothing_is_stored(store: ArtifactStore, name: str) -> None:
    with pytest.raises(ArtifactNameError) as err:
        store.put(PutRequest(principal="alice", name=name), [b"data"], QUOTA)
    assert err.value.code == "artifact_name_invalid"
    assert store.list_artifacts("alice") == []
    assert store.usage("alice") == (0, 0)


def test_a_name_of_255_bytes_is_fine(store: ArtifactStore) -> None:
    record = store.put(PutRequest(principal="alice", name="é" * 127 + "x"), [b"data"], QUOTA)
    assert len(record.name.encode()) == 255


@pytest.mark.parametrize(
    ("kw", "data", "error", "code"),
    [
        ({"expected_sha256": "0" * 64}, b"content", ChecksumMismatchError, "artifact_checksum_mismatch"),
        ({"expected_size": 100}, b"short", ArtifactTruncatedError, "artifact_truncated"),
        ({"expected_size": 3}, b"longer", ArtifactTooLargeError, "artifact_too_large"),
        ({}, b"x" * (QUOTA.max_artifact_bytes + 1), ArtifactTooLargeError, "artifact_too_large"),
        ({"expected_size": QUOTA.max_artifact_bytes + 1}, b"x", ArtifactTooLargeError, "artifact_too_large"),
    ],
)
def test_a_refused_put_leaves_nothing(
    store: ArtifactStore, kw: dict[str, object], data: bytes, error: type[Exception], code: str
) -> None:
    with pytest.raises(error) as err:
        _put(store, "alice", "f.bin", data, **kw)
    assert getattr(err.value, "code", None) == code
    assert store.list_artifacts("alice") == []
    assert store.usage("alice") == (0, 0)


def test_a_matching_checksum_and_size_are_accepted(store: ArtifactStore) -> None:
    data = b"checked content"
    record = _put(store, "alice", "f", data, expected_sha256=hashlib.sha256(data).hexdigest(), expected_size=len(data))
    assert getattr(record, "size", None) == len(data)


def test_quotas_in_bytes_and_count(store: ArtifactStore) -> None:
    small = Quota(max_bytes=1000, max_count=3, max_artifact_bytes=1000)
    store.put(PutRequest(principal="alice", name="a"), [b"a" * 600], small)
    with pytest.raises(QuotaExceededError) as err:
        store.put(PutRequest(principal="alice", name="b"), [b"b" * 500], small)
    assert err.value.code == "artifact_quota_exceeded"
    # The same bytes again are stored once and count once.
    store.put(PutRequest(principal="alice", name="a-again"), [b"a" * 600], small)
    store.put(PutRequest(principal="alice", name="c"), [b"c" * 300], small)
    assert store.usage("alice") == (900, 3)
    with pytest.raises(QuotaExceededError):
        store.put(PutRequest(principal="alice", name="d"), [b"d"], small)
    # Another principal has its own quota.
    store.put(PutRequest(principal="bob", name="a"), [b"a" * 600], small)


def test_delete_removes_the_record_and_the_last_blob(store: ArtifactStore) -> None:
    one = store.put(PutRequest(principal="alice", name="one"), [b"same"], QUOTA)
    two = store.put(PutRequest(principal="alice", name="two"), [b"same"], QUOTA)
    assert store.delete("alice", one.id) == one
    with pytest.raises(ArtifactNotFoundError):
        store.stat("alice", one.id)
    assert _read(store, "alice", two.id) == b"same"  # the shared blob stays
    store.delete("alice", two.id)
    assert store.usage("alice") == (0, 0)
    with pytest.raises(ArtifactNotFoundError):
        store.delete("alice", two.id)


@pytest.mark.parametrize("bad_id", ["", "art_", "../x", "art_" + "g" * 32, "x" * 1000])
def test_a_malformed_id_is_not_found(store: ArtifactStore, bad_id: str) -> None:
    with pytest.raises(ArtifactNotFoundError):
        store.stat("alice", bad_id)


def test_older_than_lists_for_retention(store: ArtifactStore) -> None:
    old = store.put(PutRequest(principal="alice", name="old"), [b"1"], QUOTA)
    cutoff = old.created_at + 0.001
    assert [r.id for r in store.older_than(cutoff)] == [old.id]
    assert store.older_than(old.created_at) == []


def test_racing_puts_cannot_both_take_the_last_of_a_local_quota(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "artifacts")
    quota = Quota(max_bytes=1 << 20, max_count=3, max_artifact_bytes=1 << 20)
    results: list[str] = []

    def put(n: int) -> None:
        try:
            store.put(PutRequest(principal="alice", name=f"f{n}"), [str(n).encode() * 1000], quota)
            results.append("ok")
        except QuotaExceededError:
            results.append("quota")

    threads = [threading.Thread(target=put, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 3
    assert store.usage("alice")[1] == 3
    # A refused put wrote nothing: three blobs, no orphans.
    assert store.remove_orphans() == 0
    assert sum(1 for _ in (tmp_path / "artifacts" / "blobs").rglob("*") if _.is_file()) == 3


def test_wrong_s3_credentials_are_a_clean_refusal(seaweed: Seaweed, tmp_path: Path) -> None:
    store = S3Store(seaweed.settings(secret="not-the-secret"), spool_dir=str(tmp_path))
    with pytest.raises(StoreUnavailableError) as err:
        store.put(PutRequest(principal="alice", name="x"), [b"x"], QUOTA)
    assert err.value.code == "artifact_store_unavailable"


def test_s3_server_stopped_mid_put_then_back(seaweed: Seaweed, tmp_path: Path) -> None:
    store = S3Store(seaweed.settings(prefix=f"fault-{uuid.uuid4().hex[:8]}"), spool_dir=str(tmp_path))

    def chunks_that_stop_the_server() -> Iterator[bytes]:
        yield b"first half;"
        seaweed.stop()
        yield b"second half"

    try:
        with pytest.raises(StoreUnavailableError):
            store.put(PutRequest(principal="alice", name="report.txt"), chunks_that_stop_the_server(), QUOTA)
    finally:
        seaweed.start()
    # No record points at a missing blob, and a retry succeeds.
    assert store.list_artifacts("alice") == []
    record = store.put(PutRequest(principal="alice", name="report.txt"), [b"first half;second half"], QUOTA)
    assert _read(store, "alice", record.id) == b"first half;second half"
    assert [r.id for r in store.list_artifacts("alice")] == [record.id]


def _blobs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "blobs").rglob("*") if p.is_file())


def test_local_blobs_are_per_principal(tmp_path: Path) -> None:
    """The same bytes from two principals are two blobs (a put's timing
    cannot tell whether someone else holds them), each under a digest of
    its principal (no id can spell a path); a delete removes a blob when no
    record of the same principal names it, and only then."""
    root = tmp_path / "artifacts"
    store = LocalStore(root)
    data = b"the same bytes"
    sha = hashlib.sha256(data).hexdigest()
    alice = store.put(PutRequest(principal="alice", name="a"), [data], QUOTA)
    alice2 = store.put(PutRequest(principal="alice", name="a2"), [data], QUOTA)
    mallory = store.put(PutRequest(principal="../../mallory", name="m"), [data], QUOTA)
    assert _blobs(root) == sorted(
        root / "blobs" / owner_digest(p) / "sha256" / sha[:2] / sha[2:4] / sha for p in ("alice", "../../mallory")
    )
    store.delete("alice", alice.id)
    assert len(_blobs(root)) == 2  # alice's other record still names hers
    store.delete("alice", alice2.id)
    assert _blobs(root) == [root / "blobs" / owner_digest("../../mallory") / "sha256" / sha[:2] / sha[2:4] / sha]
    assert _read(store, "../../mallory", mallory.id) == data
    assert store.remove_orphans() == 0


def test_local_orphan_sweep_knows_whose_blob_it_is(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    store = LocalStore(root)
    data = b"kept by bob"
    sha = hashlib.sha256(data).hexdigest()
    bob = store.put(PutRequest(principal="bob", name="b"), [data], QUOTA)
    # The same content left by a put of alice's that never got its row.
    orphan = root / "blobs" / owner_digest("alice") / "sha256" / sha[:2] / sha[2:4] / sha
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(data)
    assert store.remove_orphans() == 1
    assert not orphan.exists()
    assert _read(store, "bob", bob.id) == data
