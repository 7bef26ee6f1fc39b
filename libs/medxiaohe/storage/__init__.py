"""One artifact-store interface over local folders and S3, plus atomic multi-object publish.

Artifacts are addressed by URI: a plain path or ``file:///path`` (local folder), or
``s3://bucket/prefix`` (any S3 API; endpoint and credentials come from Settings).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.settings import Settings
from medxiaohe.storage.artifacts import (
    Manifest,
    download,
    fetch,
    latest_version,
    publish,
    publish_folder,
    read_file,
    resolve,
)
from medxiaohe.storage.base import ArtifactStore, ObjectInfo
from medxiaohe.storage.local import LocalStore

__all__ = [
    "ArtifactStore",
    "LocalStore",
    "Manifest",
    "ObjectInfo",
    "download",
    "fetch",
    "latest_version",
    "open_store",
    "publish",
    "publish_folder",
    "read_file",
    "resolve",
]


def open_store(uri: str, settings: Settings | None = None) -> ArtifactStore:
    """The store for a URI; s3:// URIs take endpoint and credentials from settings."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return LocalStore(Path(parsed.path if parsed.scheme else uri))
    if parsed.scheme == "s3":
        if settings is None or not settings.s3_endpoint:
            raise InvalidInput("s3:// store URIs need MEDXIAOHE_S3_ENDPOINT")
        if not parsed.netloc:
            raise InvalidInput(f"no bucket in store URI {uri!r}")
        from medxiaohe.storage.s3 import S3Store

        return S3Store(
            settings.s3_endpoint,
            parsed.netloc,
            parsed.path,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
    raise InvalidInput(
        f"unsupported store URI scheme {parsed.scheme!r} (use a path, file:// or s3://)"
    )
