"""Atomic publication of multi-object artifacts (an index, a model folder, a set of shards).

Layout under an artifact prefix::

    <prefix>/<version>/<file>...          the files, written first
    <prefix>/<version>/_MANIFEST.json     written last: names, sizes and SHA-256 of every file
    <prefix>/_LATEST                      the current version, switched by one atomic put

A version exists only once its manifest does, and is never modified afterwards, so a reader
that resolves a version sees all of it or none of it, and a reader during a publish sees the
old version or the new one. Retrying a publish with the same content and version is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import Conflict, InvalidInput, NotFound
from medxiaohe.storage.base import (
    ArtifactStore,
    HashingChunks,
    check_key,
    digest_of,
    file_chunks,
)

log = logging.getLogger(__name__)

MANIFEST = "_MANIFEST.json"
LATEST = "_LATEST"
CLAIM = "_CLAIM"  # the content a version is being written with (see publish)


@dataclass(frozen=True)
class Manifest:
    prefix: str
    version: str
    files: dict[str, dict[str, Any]]
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0

    def key(self, name: str) -> str:
        if name not in self.files:
            raise NotFound(f"{name!r} is not part of {self.prefix} version {self.version}")
        return f"{self.prefix}/{self.version}/{name}"

    def to_json(self) -> bytes:
        body = {
            "prefix": self.prefix,
            "version": self.version,
            "files": self.files,
            "metadata": self.metadata,
            "created_at": self.created_at,
        }
        return json.dumps(body, indent=2, sort_keys=True).encode()


def publish(
    store: ArtifactStore,
    prefix: str,
    files: Mapping[str, bytes | Path],
    *,
    version: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    move_latest: bool = True,
    expected_latest: str | None = None,
) -> Manifest:
    """Write files, then the manifest, then move the latest pointer; return the manifest.

    Without a version, the version is derived from the content, so an identical retry lands on
    the same version. Publishing other content under an existing version raises Conflict.
    Sets of parts (shards) pass ``move_latest=False``: each part is complete on its own.
    With ``expected_latest`` (the version read before, "" for none) the pointer moves only if
    it still names that version (a read-modify-write that another writer overtook is Conflict).
    """
    check_key(prefix)
    if not files:
        raise InvalidInput("an artifact needs at least one file")
    for name in files:
        check_key(name)
        if name == MANIFEST:
            raise InvalidInput(f"{MANIFEST} is reserved")
    entries: dict[str, dict[str, Any]] = {}
    for name, source in sorted(files.items()):
        size, sha = digest_of([source] if isinstance(source, bytes) else file_chunks(source))
        entries[name] = {"size": size, "sha256": sha}
    content_id = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]
    named = version is not None  # else the version is the content's own name
    version = version or f"c{content_id}"
    check_key(version)

    existing = _read_manifest(store, prefix, version)
    if existing is not None:
        if existing.files != entries:
            raise Conflict(f"{prefix} version {version} exists with other content")
        manifest = existing
    else:
        if named:  # other content can only meet this one under a version given by name
            _claim(store, prefix, version, content_id)
        for name, source in files.items():
            key = f"{prefix}/{version}/{name}"
            sha = entries[name]["sha256"]
            chunks = [source] if isinstance(source, bytes) else file_chunks(source)
            store.put_stream(key, chunks, expected_sha256=sha)
        manifest = Manifest(prefix, version, entries, dict(metadata or {}), time.time())
        store.put_bytes(f"{prefix}/{version}/{MANIFEST}", manifest.to_json())
    if move_latest:
        pointer = _pointer(version)
        if expected_latest is None:
            store.put_bytes(f"{prefix}/{LATEST}", pointer)
        else:  # compare-and-swap: Conflict if another publish moved it since it was read
            before = _pointer(expected_latest) if expected_latest else None
            store.swap(f"{prefix}/{LATEST}", pointer, before)
    return manifest


def _claim(store: ArtifactStore, prefix: str, version: str, content_id: str) -> None:
    """Claim ``version`` for this content before a byte of it is written (a create-only write):
    two writers of other content under one version (a retry racing its first attempt) would
    otherwise interleave their files under one manifest. The same content goes on (a retry,
    or two equal writes racing); other content is a Conflict."""
    key = f"{prefix}/{version}/{CLAIM}"
    try:
        store.swap(key, content_id.encode(), None)
    except Conflict:
        if store.get_bytes(key) != content_id.encode():
            raise Conflict(
                f"{prefix} version {version} is being written with other content"
            ) from None


def _pointer(version: str) -> bytes:
    return json.dumps({"version": version}).encode()


def _read_manifest(store: ArtifactStore, prefix: str, version: str) -> Manifest | None:
    try:
        body = json.loads(store.get_bytes(f"{prefix}/{version}/{MANIFEST}"))
    except NotFound:
        return None
    return Manifest(
        prefix=body["prefix"],
        version=body["version"],
        files=body["files"],
        metadata=body.get("metadata", {}),
        created_at=body.get("created_at", 0.0),
    )


def latest_version(store: ArtifactStore, prefix: str) -> str:
    """The version the latest pointer names; NotFound if nothing was published."""
    try:
        pointer = json.loads(store.get_bytes(f"{check_key(prefix)}/{LATEST}"))
    except NotFound:
        raise NotFound(f"nothing has been published under {prefix!r}") from None
    version: str = pointer["version"]
    return version


def resolve(store: ArtifactStore, prefix: str, version: str | None = None) -> Manifest:
    """The manifest of a complete version (the latest when None); NotFound otherwise."""
    version = version or latest_version(store, prefix)
    manifest = _read_manifest(store, check_key(prefix), check_key(version))
    if manifest is None:
        raise NotFound(f"{prefix} has no complete version {version!r}")
    return manifest


def read_file(store: ArtifactStore, manifest: Manifest, name: str) -> bytes:
    """One file of a resolved version, checked against the manifest's digest."""
    data = store.get_bytes(manifest.key(name))
    if hashlib.sha256(data).hexdigest() != manifest.files[name]["sha256"]:
        raise Conflict(f"{manifest.prefix}/{manifest.version}/{name} does not match its manifest")
    return data


def publish_folder(store: ArtifactStore, prefix: str, folder: Path, **options: Any) -> Manifest:
    """``publish`` every file under a local folder, named by its path inside it (a folder
    that ``download`` wrote republishes as it is: its manifest copy is left out)."""
    files = {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p != folder / MANIFEST
    }
    return publish(store, prefix, files, **options)


def _verified(path: Path, entry: dict[str, Any]) -> bool:
    """Whether a file already on disk is the manifest's (size, then digest)."""
    if not path.is_file() or path.stat().st_size != entry["size"]:
        return False
    return bool(digest_of(file_chunks(path))[1] == entry["sha256"])


def download(
    store: ArtifactStore, manifest: Manifest, folder: Path, max_bytes: int | None = None
) -> Path:
    """Every file of a version into ``folder``: streamed to disk (never whole in memory), its
    digest checked before it takes its name, a file already there and verified kept (so a
    broken download resumes), progress logged per file; refused before any byte moves when
    the version is larger than ``max_bytes``. A folder that already holds this version
    completely (its manifest copy written last) is reused."""
    done = folder / MANIFEST
    if done.is_file() and json.loads(done.read_bytes()).get("files") == manifest.files:
        return folder
    total = sum(int(e["size"]) for e in manifest.files.values())
    if max_bytes is not None and total > max_bytes:
        raise InvalidInput(
            f"{manifest.prefix}/{manifest.version} is {total / 2**30:.1f} GiB, over the "
            f"download limit of {max_bytes / 2**30:.1f} GiB"
        )
    moved = 0
    for n, (name, entry) in enumerate(sorted(manifest.files.items()), 1):
        target = folder / name
        if not _verified(target, entry):
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            hashing = HashingChunks(store.iter_chunks(manifest.key(name)))
            with partial.open("wb") as fh:
                for chunk in hashing:  # hashed as it is written: the file is read once
                    fh.write(chunk)
            if (hashing.size, hashing.sha256) != (entry["size"], entry["sha256"]):
                partial.unlink(missing_ok=True)
                raise Conflict(
                    f"{manifest.prefix}/{manifest.version}/{name} does not match its manifest"
                )
            partial.replace(target)
        moved += int(entry["size"])
        log.info(
            "artifact file in place",
            extra={"key": manifest.prefix, "count": n, "size": moved},
        )
    done.write_bytes(manifest.to_json())
    return folder


def fetch(
    store: ArtifactStore,
    prefix: str,
    cache: Path,
    version: str | None = None,
    max_bytes: int | None = None,
) -> Path:
    """The latest (or a given) version of an artifact as a local folder under ``cache``,
    downloaded and verified once; NotFound when nothing complete is published there."""
    manifest = resolve(store, prefix, version)
    return download(store, manifest, cache / prefix / manifest.version, max_bytes)
