"""Artifact store over any S3 API (MinIO in a cluster, SeaweedFS in tests), via the minio SDK."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import BinaryIO, NoReturn, cast

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import MinioException, S3Error

from medxiaohe.common.errors import Conflict, NotFound, Unavailable
from medxiaohe.storage.base import (
    CHUNK,
    PARTIAL,
    PARTIAL_PREFIX,
    ArtifactStore,
    HashingChunks,
    ObjectInfo,
    check_digest,
    check_key,
    check_prefix,
)

PART_SIZE = 16 << 20  # multipart part size; objects larger than this go up in parts
_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"}


class _ChunkReader(io.RawIOBase):
    """A file-like view of an iterable of chunks, for minio's streaming put."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buf) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf += chunk
        if size < 0:
            size = len(self._buf)
        out, self._buf = self._buf[:size], self._buf[size:]
        return out


class S3Store(ArtifactStore):
    """Objects under ``s3://bucket/prefix``; the bucket is created on first ping if missing."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str = "",
        *,
        access_key: str,
        secret_key: str,
        secure: bool = True,
        region: str = "us-east-1",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = f"s3://{bucket}/{self.prefix}"
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=3.0, read=60.0),
            retries=urllib3.Retry(
                total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)
            ),
            maxsize=16,
        )
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _fail(self, exc: Exception, key: str) -> NoReturn:
        if isinstance(exc, S3Error) and exc.code in _MISSING:
            raise NotFound(f"no object at key {key!r}") from None
        if isinstance(exc, S3Error):
            raise Unavailable(f"object store refused the request ({exc.code})") from None
        raise Unavailable(f"object store unreachable ({type(exc).__name__})") from None

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, expected_sha256: str | None = None
    ) -> ObjectInfo:
        name = self._name(key)
        hashing = HashingChunks(chunks)
        # S3 makes an object visible only when its (multipart) upload completes, so a plain
        # put is atomic. To verify a digest before anything is visible, go through a partial key
        # beside the target (a credential scoped to the target's prefix may write it).
        folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        target = folder + PARTIAL_PREFIX + uuid.uuid4().hex if expected_sha256 else name
        try:
            result = self._client.put_object(
                self.bucket,
                target,
                cast(BinaryIO, _ChunkReader(hashing)),
                length=-1,
                part_size=PART_SIZE,
            )
            if expected_sha256:
                try:
                    check_digest(expected_sha256, hashing.sha256)
                    result = self._client.copy_object(
                        self.bucket, name, CopySource(self.bucket, target)
                    )
                finally:
                    self._client.remove_object(self.bucket, target)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            self._fail(exc, key)
        return ObjectInfo(key, hashing.size, etag=result.etag or "", sha256=hashing.sha256)

    def swap(self, key: str, data: bytes, expected: bytes | None) -> None:
        """A conditional PUT: If-Match the etag of the content read (If-None-Match: * when
        there is none), so the store itself refuses a write that another one overtook."""
        name = self._name(key)
        try:
            try:
                response = self._client.get_object(self.bucket, name)
                current: bytes | None = response.read()
                etag = response.headers.get("etag", "")
                response.close()
                response.release_conn()
            except S3Error as exc:
                if exc.code not in _MISSING:
                    raise
                current, etag = None, ""
            if current != expected:
                raise Conflict(f"{key} changed since it was read; read it again and retry")
            condition = {"If-Match": etag} if current is not None else {"If-None-Match": "*"}
            # the SDK's put_object sends no conditions: its request method does (minio 7.2)
            self._client._execute("PUT", self.bucket, name, body=data, headers={**condition})
        except S3Error as exc:
            if exc.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise Conflict(
                    f"{key} changed since it was read; read it again and retry"
                ) from None
            self._fail(exc, key)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            self._fail(exc, key)

    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        name = self._name(key)
        try:
            response = self._client.get_object(self.bucket, name)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            self._fail(exc, key)
        return self._drain(response, key, chunk_size)

    def _drain(
        self, response: urllib3.BaseHTTPResponse, key: str, chunk_size: int
    ) -> Iterator[bytes]:
        try:
            yield from response.stream(chunk_size)
        except urllib3.exceptions.HTTPError as exc:
            self._fail(exc, key)
        finally:
            response.close()
            response.release_conn()

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = self._client.stat_object(self.bucket, self._name(key))
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            self._fail(exc, key)
        return ObjectInfo(key, st.size or 0, etag=st.etag or "")

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # S3 lists keys in lexicographic order, which is the order this interface promises.
        objects = self._client.list_objects(
            self.bucket, prefix=self.prefix + check_prefix(prefix), recursive=True
        )
        try:
            for obj in objects:
                key = (obj.object_name or "")[len(self.prefix) :]
                if key and PARTIAL not in key.split("/") and not key.endswith("/"):
                    yield ObjectInfo(key, obj.size or 0, etag=obj.etag or "")
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            self._fail(exc, prefix)

    def delete(self, key: str) -> None:
        try:
            self._client.remove_object(self.bucket, self._name(key))
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            self._fail(exc, key)

    def presign(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        self.stat(key)
        url: str = self._client.presigned_get_object(self.bucket, self._name(key), expires=expires)
        return url

    def ping(self) -> None:
        """The store answers and knows this credential; the bucket is created when missing
        and the credential may create it. A credential scoped to some prefixes (one per
        component) is refused bucket-level calls: AccessDenied still proves both."""
        try:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists", "AccessDenied"):
                self._fail(exc, "")
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            self._fail(exc, "")
