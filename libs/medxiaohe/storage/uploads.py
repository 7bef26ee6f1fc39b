"""Immutable uploads: what a hospital system sends in is stored once under ``uploads/``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from medxiaohe.common.errors import Conflict
from medxiaohe.storage.base import (
    ArtifactStore,
    ObjectInfo,
    check_digest,
    check_key,
    digest_of,
    file_chunks,
)

UPLOADS = "uploads/"


def upload_key(key: str) -> str:
    """The store key of an upload: its key under ``uploads/``."""
    return UPLOADS + check_key(key)


def caller_uploads(caller: str) -> str:
    """Where a caller's uploads live: each caller reads back only what it sent. The identity
    is percent-encoded into one key segment, so no two callers share a folder (a name with a
    "/", such as a URI SAN, cannot reach into another's)."""
    return f"{UPLOADS}callers/{check_key(quote(caller, safe='-_.~@'))}/"


def put_upload(
    store: ArtifactStore, key: str, path: Path, *, expected_sha256: str | None = None
) -> ObjectInfo:
    """Store the file at ``path`` under ``uploads/<key>``, once.

    The key is the idempotency key: re-sending the same content returns the stored object;
    other content under an existing key raises Conflict and changes nothing.
    """
    dest = upload_key(key)
    size, digest = digest_of(file_chunks(path))
    check_digest(expected_sha256, digest)
    if store.exists(dest):
        if digest_of(store.iter_chunks(dest))[1] != digest:
            raise Conflict(f"{dest} already exists with other content; uploads are immutable")
        return ObjectInfo(dest, size, sha256=digest)
    info = store.put_file(dest, path)
    return ObjectInfo(dest, info.size, info.etag, digest)
