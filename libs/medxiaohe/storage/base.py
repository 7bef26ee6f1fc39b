"""The artifact-store interface every backend implements."""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from medxiaohe.common.errors import InvalidInput

CHUNK = 1 << 20  # 1 MiB
PARTIAL_PREFIX = ".partial/"  # in-flight uploads; never listed, never a valid key segment
PARTIAL = PARTIAL_PREFIX.rstrip("/")
_BAD_KEY = re.compile(r"[\x00-\x1f\\]")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str = ""
    sha256: str = ""


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise InvalidInput."""
    if not key or len(key) > 1024:
        raise InvalidInput("object key must be 1..1024 characters")
    if key.startswith("/") or _BAD_KEY.search(key):
        raise InvalidInput("object key must be relative, without backslashes or control characters")
    parts = key.split("/")
    if any(p in ("", ".", "..", PARTIAL) for p in parts):
        raise InvalidInput("object key has an empty, '.', '..' or reserved segment")
    return key


def check_prefix(prefix: str) -> str:
    """Like check_key, for listing prefixes: empty, or a key optionally ending in '/'."""
    if prefix:
        check_key(prefix.rstrip("/"))
    return prefix


class HashingChunks:
    """Passes chunks through, counting bytes and hashing them (SHA-256)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self.size = 0
        self._sha = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.size += len(chunk)
            self._sha.update(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def file_chunks(path: Path, chunk_size: int = CHUNK) -> Iterator[bytes]:
    with path.open("rb") as fh:
        yield from iter(lambda: fh.read(chunk_size), b"")


def digest_of(chunks: Iterable[bytes]) -> tuple[int, str]:
    """Size and SHA-256 (hex) of a stream of chunks."""
    hashing = HashingChunks(chunks)
    for _ in hashing:
        pass
    return hashing.size, hashing.sha256


def check_digest(expected: str | None, actual: str) -> None:
    if expected and expected.lower() != actual:
        raise InvalidInput("content does not match the given sha256; nothing was stored")


class ArtifactStore(ABC):
    """Objects addressed by relative keys under one root (a folder, or a bucket and prefix).

    Every write is atomic: a reader sees the whole old object or the whole new one. Missing
    keys raise NotFound; an unreachable backend raises Unavailable.
    """

    uri: str

    @abstractmethod
    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, expected_sha256: str | None = None
    ) -> ObjectInfo:
        """Store chunks under key (multipart for large objects); verify the digest if given."""

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return self.put_stream(key, [data])

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        return self.put_stream(key, file_chunks(path))

    @abstractmethod
    def swap(self, key: str, data: bytes, expected: bytes | None) -> None:
        """Write ``data`` only if the object holds ``expected`` now (None: only if there is no
        object), as one atomic step; Conflict otherwise. For small pointers (``_LATEST``)."""

    @abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """Stream an object; raises NotFound before yielding when the key is missing."""

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    def get_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        with tmp.open("wb") as fh:
            for chunk in self.iter_chunks(key):
                fh.write(chunk)
        tmp.replace(path)

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size and etag of an object; NotFound when missing."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix, in key order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing a missing key is not an error (idempotent)."""

    @abstractmethod
    def presign(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """A URL that reads the object without further credentials until it expires."""

    @abstractmethod
    def ping(self) -> None:
        """Raise Unavailable unless the backend is reachable and writable."""
