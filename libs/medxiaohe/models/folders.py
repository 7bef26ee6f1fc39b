"""Model URIs as local folders, local folders published as model URIs, and a published
model's card (``medxiaohe.json``: its provenance and figures)."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe.common.settings import Settings
from medxiaohe.storage import (
    ArtifactStore,
    Manifest,
    fetch,
    open_store,
    publish_folder,
    read_file,
    resolve,
)
from medxiaohe.storage.artifacts import LATEST

CARD = "medxiaohe.json"
MAX_CARD_BYTES = 1 << 20


def model_folder(uri: str, settings: Settings) -> Path:
    """A model URI as a local folder: a folder as it is (a copy of a whole published prefix,
    as KServe's storage initializer makes of ``s3://.../models/vlm``: its current version);
    ``s3://bucket/prefix`` or a key prefix in the platform store (``models/ner``) fetched,
    verified, into the model cache."""
    if Path(uri).is_dir():
        return _current_version(Path(uri))
    limit = int(settings.model_max_download_gb * 2**30)
    if uri.startswith("s3://"):
        _, store, prefix = _s3(uri, settings)
        return fetch(store, prefix, settings.model_cache_dir, max_bytes=limit)
    store = open_store(settings.store_uri, settings)
    return fetch(store, uri.strip("/"), settings.model_cache_dir, max_bytes=limit)


def pinned_uri(uri: str, settings: Settings) -> str:
    """``s3://bucket/prefix`` of a published model as the URI of the version it names now
    (``s3://bucket/prefix/VERSION``), so a deployment serves that version until it is deployed
    again; any other URI (a version already, hf://, a prefix with nothing published) as it is.
    Unavailable when the store cannot be reached."""
    if not uri.startswith("s3://"):
        return uri
    bucket, store, prefix = _s3(uri, settings)
    if not prefix or not store.exists(f"{prefix}/{LATEST}"):
        return uri
    manifest = resolve(store, prefix)
    return f"s3://{bucket}/{manifest.prefix}/{manifest.version}"


def _s3(uri: str, settings: Settings) -> tuple[str, ArtifactStore, str]:
    """``s3://bucket/prefix`` as its bucket, a store on that bucket, and the prefix."""
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, open_store(f"s3://{bucket}", settings), prefix.strip("/")


def _current_version(folder: Path) -> Path:
    """``folder``, or the complete version its ``_LATEST`` names when it is a copy of a
    published prefix."""
    if not (folder / LATEST).is_file():
        return folder
    manifest = resolve(open_store(str(folder.parent)), folder.name)
    return folder / manifest.version


def model_card(uri: str, settings: Settings) -> dict[str, Any]:
    """What a model says of itself, without fetching its weights: ``uri``, the published
    ``prefix``/``version``/``created_at`` (none for a plain folder), the card's fields
    (stage, run, config, data, ...) and ``figures`` (null when it holds none)."""
    if Path(uri).is_dir():
        path = Path(uri) / CARD
        if not path.is_file() or path.stat().st_size > MAX_CARD_BYTES:
            raise NotFound(f"{uri} holds no {CARD}")
        body, where = path.read_bytes(), {}
    else:
        if uri.startswith("s3://"):
            _, store, prefix = _s3(uri, settings)
        else:
            store, prefix = open_store(settings.store_uri, settings), uri
        manifest = _manifest(store, prefix.strip("/"))
        if manifest.files.get(CARD, {}).get("size", MAX_CARD_BYTES + 1) > MAX_CARD_BYTES:
            raise NotFound(f"{uri} holds no {CARD}")
        body = read_file(store, manifest, CARD)
        where = {
            "prefix": manifest.prefix,
            "version": manifest.version,
            "created_at": manifest.created_at,
        }
    try:
        card = json.loads(body)
    except json.JSONDecodeError:
        raise InvalidInput(f"the {CARD} of {uri} is not JSON") from None
    if not isinstance(card, dict):
        raise InvalidInput(f"the {CARD} of {uri} is not an object")
    return {"uri": uri, **where, **card, "figures": card.get("figures")}


def _manifest(store: ArtifactStore, prefix: str) -> Manifest:
    """``models/sft`` (its latest version) or ``models/sft/<version>``."""
    try:
        return resolve(store, prefix)
    except NotFound:
        parent, _, version = prefix.rpartition("/")
        if parent:
            with contextlib.suppress(NotFound):
                return resolve(store, parent, version)
        raise


def save_model_folder(folder: Path, uri: str, settings: Settings) -> str:
    """Publish a model folder to ``s3://bucket/prefix`` (a new version, atomically), or copy
    it to a local folder that must not exist yet (written beside it, then renamed)."""
    if uri.startswith("s3://"):
        bucket, store, prefix = _s3(uri, settings)
        store.ping()  # reachable, and the bucket exists
        manifest: Manifest = publish_folder(store, prefix, folder)
        return f"s3://{bucket}/{manifest.prefix}/{manifest.version}"
    target = Path(uri.removeprefix("file://"))
    if target.exists():
        raise InvalidInput(f"{target} exists; choose a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    shutil.copytree(folder, partial, dirs_exist_ok=True)
    partial.rename(target)
    return str(target)
