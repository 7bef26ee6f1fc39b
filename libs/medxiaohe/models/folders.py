"""Model URIs as local folders, and local folders published as model URIs."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.settings import Settings
from medxiaohe.storage import Manifest, fetch, open_store, publish_folder


def model_folder(uri: str, settings: Settings) -> Path:
    """A model URI as a local folder: a folder as it is; ``s3://bucket/prefix`` or a key
    prefix in the platform store (``models/ner``) fetched, verified, into the model cache."""
    if Path(uri).is_dir():
        return Path(uri)
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        store = open_store(f"s3://{bucket}", settings)
        return fetch(store, prefix.strip("/"), settings.model_cache_dir)
    store = open_store(settings.store_uri, settings)
    return fetch(store, uri.strip("/"), settings.model_cache_dir)


def save_model_folder(folder: Path, uri: str, settings: Settings) -> str:
    """Publish a model folder to ``s3://bucket/prefix`` (a new version, atomically), or copy
    it to a local folder that must not exist yet (written beside it, then renamed)."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        store = open_store(f"s3://{bucket}", settings)
        store.ping()  # reachable, and the bucket exists
        manifest: Manifest = publish_folder(store, prefix.strip("/"), folder)
        return f"s3://{bucket}/{manifest.prefix}/{manifest.version}"
    target = Path(uri.removeprefix("file://"))
    if target.exists():
        raise InvalidInput(f"{target} exists; choose a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    shutil.copytree(folder, partial, dirs_exist_ok=True)
    partial.rename(target)
    return str(target)
