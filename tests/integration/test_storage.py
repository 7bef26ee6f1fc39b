"""One suite, two backends: a local folder and real S3 (weed mini through the minio SDK)."""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.request
import uuid
from pathlib import Path

import pytest

from medxiaohe.common.errors import Conflict, InvalidInput, NotFound, Unavailable
from medxiaohe.common.settings import Settings
from medxiaohe.storage import ArtifactStore, open_store, publish, read_file, resolve
from medxiaohe.storage.artifacts import LATEST, MANIFEST
from medxiaohe.storage.s3 import PART_SIZE
from tests.conftest import s3_settings
from tests.servers import Weed

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    weed: Weed = request.getfixturevalue("weed")
    values = s3_settings(weed.endpoint, f"t-{uuid.uuid4().hex[:12]}")
    s3 = open_store(str(values["store_uri"]), Settings(**values))  # type: ignore[arg-type]
    s3.ping()  # creates the bucket
    return s3


def test_put_get_stream_list_exists_delete(store: ArtifactStore) -> None:
    store.put_bytes("a/one.txt", b"one")
    store.put_bytes("a/two.txt", b"two" * 1000)
    store.put_bytes("b/three.txt", b"")
    assert store.get_bytes("a/one.txt") == b"one"
    assert b"".join(store.iter_chunks("a/two.txt", chunk_size=7)) == b"two" * 1000
    assert [o.key for o in store.list("a/")] == ["a/one.txt", "a/two.txt"]
    assert [o.key for o in store.list()] == ["a/one.txt", "a/two.txt", "b/three.txt"]
    assert store.stat("a/two.txt").size == 3000
    assert store.exists("b/three.txt")
    assert store.get_bytes("b/three.txt") == b""
    store.delete("a/one.txt")
    store.delete("a/one.txt")  # idempotent
    assert not store.exists("a/one.txt")


def test_a_listing_survives_a_delete_beside_it(store: ArtifactStore) -> None:
    # A run deletes its older checkpoints while a watcher lists them (the CPT resume test).
    for name in "abcd":
        store.put_bytes(f"c/{name}", name.encode())
    listing = store.list("c/")
    first = next(listing).key
    store.delete("c/c")
    rest = [o.key for o in listing]
    assert first == "c/a"
    assert {"c/b", "c/d"} <= set(rest) <= {"c/b", "c/c", "c/d"}
    assert len(rest) == len(set(rest))


def test_missing_key_is_not_found(store: ArtifactStore) -> None:
    with pytest.raises(NotFound):
        store.get_bytes("nope/missing.bin")
    with pytest.raises(NotFound):
        store.stat("nope/missing.bin")
    with pytest.raises(NotFound):
        store.presign("nope/missing.bin")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a\\b", ".partial/x", "a\nb"])
def test_unsafe_keys_are_rejected(store: ArtifactStore, key: str) -> None:
    with pytest.raises(InvalidInput):
        store.put_bytes(key, b"x")


def test_50mb_multipart_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(50 * 1024 * 1024))
    info = store.put_file("big/blob.bin", source)
    assert info.size == source.stat().st_size
    if "s3://" in store.uri:  # really went up in parts: S3's multipart etag is "<md5>-<parts>"
        parts = -(-info.size // PART_SIZE)
        assert store.stat("big/blob.bin").etag.endswith(f"-{parts}")
    back = tmp_path / "back.bin"
    store.get_file("big/blob.bin", back)
    assert hashlib.sha256(back.read_bytes()).hexdigest() == info.sha256
    assert info.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()


def test_digest_mismatch_stores_nothing(store: ArtifactStore) -> None:
    with pytest.raises(InvalidInput):
        store.put_stream("x/y.bin", [b"abc"], expected_sha256="0" * 64)
    assert not store.exists("x/y.bin")
    assert list(store.list()) == []
    good = hashlib.sha256(b"abc").hexdigest()
    assert store.put_stream("x/y.bin", [b"a", b"bc"], expected_sha256=good).sha256 == good


def test_presigned_url_reads_the_object(store: ArtifactStore) -> None:
    store.put_bytes("p/q.txt", b"presigned")
    url = store.presign("p/q.txt")
    assert url.startswith(("http://127.0.0.1", "file://"))
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (our own server)
        assert response.read() == b"presigned"


def test_publish_resolve_and_idempotent_retry(store: ArtifactStore, tmp_path: Path) -> None:
    big = tmp_path / "weights.bin"
    big.write_bytes(b"w" * 4096)
    first = publish(store, "models/tiny", {"config.json": b"{}", "weights.bin": big})
    again = publish(store, "models/tiny", {"config.json": b"{}", "weights.bin": big})
    assert again.version == first.version
    assert resolve(store, "models/tiny").version == first.version
    assert read_file(store, resolve(store, "models/tiny"), "weights.bin") == b"w" * 4096
    with pytest.raises(Conflict):
        publish(store, "models/tiny", {"config.json": b"{1}"}, version=first.version)
    with pytest.raises(NotFound):
        resolve(store, "models/absent")


def test_half_written_version_is_invisible(store: ArtifactStore) -> None:
    v1 = publish(store, "idx/x", {"a": b"1", "b": b"1"}, version="v1")
    # a publisher that died after its files and before its manifest
    store.put_bytes("idx/x/v2/a", b"2")
    store.put_bytes("idx/x/v2/b", b"2")
    assert resolve(store, "idx/x").version == v1.version
    with pytest.raises(NotFound):
        resolve(store, "idx/x", "v2")


def test_reader_during_publish_sees_one_version_whole(store: ArtifactStore) -> None:
    names = [f"part-{i}" for i in range(4)]
    publish(store, "idx/live", dict.fromkeys(names, b"v0"), version="v0")
    seen: set[str] = set()
    mixed: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            manifest = resolve(store, "idx/live")
            contents = {read_file(store, manifest, n).decode() for n in names}
            if contents != {manifest.version}:
                mixed.append(f"{manifest.version}: {contents}")
            seen.add(manifest.version)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(1, 9):
        publish(store, "idx/live", {n: f"v{i}".encode() for n in names}, version=f"v{i}")
    done.set()
    for t in threads:
        t.join()
    assert not mixed
    assert len(seen) >= 2  # the readers really overlapped the publishes
    assert store.get_bytes(f"idx/live/{LATEST}")
    assert store.exists(f"idx/live/v8/{MANIFEST}")


def test_unreachable_s3_is_unavailable() -> None:
    values = s3_settings("127.0.0.1:9", "nobucket")
    store = open_store(str(values["store_uri"]), Settings(**values))  # type: ignore[arg-type]
    with pytest.raises(Unavailable):
        store.ping()
    with pytest.raises(Unavailable):
        store.get_bytes("a")


def test_a_model_folder_round_trips_through_s3(weed: Weed, tmp_path: Path) -> None:
    """`medxiaohe model init-tiny --out s3://...`, then a service loading it by URI."""
    from medxiaohe.models.folders import model_folder, save_model_folder
    from medxiaohe.models.tiny import build_tiny
    from medxiaohe.models.vlm import load_vlm

    values = s3_settings(weed.endpoint, f"models-{uuid.uuid4().hex[:8]}")
    settings = Settings(**values, model_cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    bucket = str(values["store_uri"]).split("/")[2]
    folder = build_tiny("qwen2_vl", tmp_path / "built")
    uri = save_model_folder(folder, f"s3://{bucket}/models/tiny-vlm", settings)
    assert uri.startswith(f"s3://{bucket}/models/tiny-vlm/c")  # a content-named version
    local = model_folder(f"s3://{bucket}/models/tiny-vlm", settings)  # the latest version
    assert local.is_relative_to(tmp_path / "cache")
    assert (local / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    assert load_vlm(local).model.config.model_type == "qwen2_vl"
    # `model deploy` pins the prefix to the version it names now; a version stays itself
    from medxiaohe.models.folders import pinned_uri

    assert pinned_uri(f"s3://{bucket}/models/tiny-vlm/", settings) == uri
    assert pinned_uri(uri, settings) == uri
    assert (
        pinned_uri(f"s3://{bucket}/models/none-yet", settings) == f"s3://{bucket}/models/none-yet"
    )
    assert pinned_uri("hf://org/model", settings) == "hf://org/model"

    from medxiaohe_services.model.predictor import VlmPredictor

    predictor = VlmPredictor("tiny", f"s3://{bucket}/models/tiny-vlm", settings)
    assert not predictor.ready  # ready only after load
    predictor.load()
    assert predictor.ready


def test_swap_is_compare_and_swap(store: ArtifactStore) -> None:
    """The latest pointer of an index moves only from the version a writer read: two
    writers that read the same one cannot both move it (the store itself refuses)."""
    store.swap("p/_LATEST", b"v1", None)  # created only if absent
    with pytest.raises(Conflict):
        store.swap("p/_LATEST", b"v1b", None)
    store.swap("p/_LATEST", b"v2", b"v1")
    with pytest.raises(Conflict):
        store.swap("p/_LATEST", b"v3", b"v1")  # it read v1, but v2 is there now
    assert store.get_bytes("p/_LATEST") == b"v2"
    won: list[bytes] = []
    lost: list[bytes] = []

    def race(value: bytes) -> None:
        try:
            store.swap("p/_LATEST", value, b"v2")
            won.append(value)
        except Conflict:
            lost.append(value)

    racers = [threading.Thread(target=race, args=(b"r%d" % i,)) for i in range(6)]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    assert len(won) == 1
    assert len(lost) == 5
    assert store.get_bytes("p/_LATEST") == won[0]
    first = publish(store, "idx", {"a.txt": b"a"})
    publish(store, "idx", {"b.txt": b"b"}, expected_latest=first.version)
    with pytest.raises(Conflict):  # built on the first version, which is no longer the latest
        publish(store, "idx", {"c.txt": b"c"}, expected_latest=first.version)


def test_a_download_streams_resumes_verifies_and_keeps_to_its_limit(
    store: ArtifactStore, tmp_path: Path
) -> None:
    """Model downloads cannot hang or fill a disk: refused over the size limit before a byte
    moves, each file's digest checked before it takes its name, a broken download resumed
    with the verified files kept, a tampered object refused."""
    from medxiaohe.storage.artifacts import download

    files = {"a.bin": os.urandom(3000), "b.bin": os.urandom(5000)}
    manifest = publish(store, "models/dl", files)
    folder = tmp_path / "cache"
    with pytest.raises(InvalidInput, match="over the download limit"):
        download(store, manifest, folder, max_bytes=7999)
    assert not folder.exists()
    download(store, manifest, folder, max_bytes=8000)
    assert (folder / "b.bin").read_bytes() == files["b.bin"]

    (folder / MANIFEST).unlink()  # a download broken after a.bin: b.bin half there
    (folder / "b.bin").write_bytes(files["b.bin"][:100])
    kept = (folder / "a.bin").stat().st_mtime_ns
    download(store, manifest, folder)
    assert (folder / "a.bin").stat().st_mtime_ns == kept  # verified, not fetched again
    assert (folder / "b.bin").read_bytes() == files["b.bin"]

    store.put_bytes(manifest.key("b.bin"), b"tampered")  # the object no longer matches
    (folder / MANIFEST).unlink()
    (folder / "b.bin").unlink()
    with pytest.raises(Conflict, match="does not match its manifest"):
        download(store, manifest, tmp_path / "other")
    assert not list((tmp_path / "other").glob("*.partial"))
