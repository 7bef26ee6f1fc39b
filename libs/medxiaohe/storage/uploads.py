"""Immutable uploads: what a hospital system sends in is stored once under ``uploads/``."""

from __future__ import annotations

import hashlib
from pathlib import Path

from medxiaohe.common.errors import Conflict
from medxiaohe.storage.base import ArtifactStore, ObjectInfo, check_digest, check_key

UPLOADS = "uploads/"


def upload_key(key: str) -> str:
    """The store key of an upload: its caller-given key under ``uploads/``."""
    return UPLOADS + check_key(key)


def sha256_of(store: ArtifactStore, key: str) -> str:
    sha = hashlib.sha256()
    for chunk in store.iter_chunks(key):
        sha.update(chunk)
    return sha.hexdigest()


def put_upload(
    store: ArtifactStore, key: str, path: Path, *, expected_sha256: str | None = None
) -> ObjectInfo:
    """Store the file at ``path`` under ``uploads/<key>``, once.

    The key is the idempotency key: re-sending the same content returns the stored object;
    other content under an existing key raises Conflict and changes nothing.
    """
    dest = upload_key(key)
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    digest = sha.hexdigest()
    check_digest(expected_sha256, digest)
    if store.exists(dest):
        if sha256_of(store, dest) != digest:
            raise Conflict(f"{dest} already exists with other content; uploads are immutable")
        return ObjectInfo(dest, path.stat().st_size, sha256=digest)
    info = store.put_file(dest, path)
    return ObjectInfo(dest, info.size, info.etag, digest)
