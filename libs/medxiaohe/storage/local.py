"""Artifact store over a local folder (the embedded default)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from medxiaohe.common.errors import Conflict, NotFound, Unavailable
from medxiaohe.storage.base import (
    CHUNK,
    PARTIAL_PREFIX,
    ArtifactStore,
    HashingChunks,
    ObjectInfo,
    check_digest,
    check_key,
    check_prefix,
)


class LocalStore(ArtifactStore):
    """Objects are files under ``root``; writes go to ``root/.partial`` and are renamed in."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.uri = self.root.as_uri()
        self._partial = self.root / PARTIAL_PREFIX.rstrip("/")

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, expected_sha256: str | None = None
    ) -> ObjectInfo:
        dest = self._path(key)
        self._partial.mkdir(parents=True, exist_ok=True)
        tmp = self._partial / uuid.uuid4().hex
        hashing = HashingChunks(chunks)
        try:
            with tmp.open("wb") as fh:
                for chunk in hashing:
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            check_digest(expected_sha256, hashing.sha256)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return ObjectInfo(key, hashing.size, sha256=hashing.sha256)

    def swap(self, key: str, data: bytes, expected: bytes | None) -> None:
        """Compared and replaced under an exclusive lock on the store (flock), which every
        process on this machine that swaps takes too."""
        import fcntl

        self._partial.mkdir(parents=True, exist_ok=True)
        with (self._partial / "swap.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current: bytes | None = self.get_bytes(key)
            except NotFound:
                current = None
            if current != expected:
                raise Conflict(f"{key} changed since it was read; read it again and retry")
            self.put_bytes(key, data)

    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        path = self._path(key)
        try:
            fh = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no object at key {key!r}") from None
        return _chunks_of(fh, chunk_size)

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"no object at key {key!r}")
        st = path.stat()
        return ObjectInfo(key, st.st_size, etag=f"{st.st_mtime_ns:x}-{st.st_size:x}")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        if not self.root.is_dir():
            return
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        found = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if Path(dirpath, d) != self._partial]
            for name in filenames:
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(key)
        for key in sorted(found):
            try:
                size = (self.root / key).stat().st_size
            except FileNotFoundError:  # deleted since the walk, as a concurrent delete on S3
                continue
            yield ObjectInfo(key, size)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def presign(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        # A local folder has no server to sign for: the file URL is readable by this user only.
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"no object at key {key!r}")
        return path.as_uri()

    def ping(self) -> None:
        try:
            self._partial.mkdir(parents=True, exist_ok=True)
            if not os.access(self._partial, os.W_OK):
                raise Unavailable(f"store folder {self.root} is not writable")
        except OSError as exc:
            raise Unavailable(f"store folder {self.root} is unusable: {exc.strerror}") from None


def _chunks_of(fh: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with fh:
        yield from iter(lambda: fh.read(chunk_size), b"")
