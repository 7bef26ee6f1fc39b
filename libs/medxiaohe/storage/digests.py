"""Content digests of artifacts, recorded once under ``digests/<key>.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from medxiaohe.common.errors import NotFound
from medxiaohe.storage.base import ArtifactStore, check_key, digest_of

DIGESTS = "digests/"


@dataclass(frozen=True)
class Digest:
    key: str
    size: int
    sha256: str
    etag: str
    computed: bool  # False when an earlier run's record was reused

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def digest_artifact(store: ArtifactStore, key: str) -> Digest:
    """Hash the object at key, or reuse the record of an earlier run for the same object version.

    Safe to run twice or concurrently: the record is keyed by the object's etag and written with
    one atomic put, so a retry either reuses it or writes the same bytes again.
    """
    info = store.stat(check_key(key))
    record_key = f"{DIGESTS}{key}.json"
    try:
        record = json.loads(store.get_bytes(record_key))
        if record["etag"] == info.etag:
            return Digest(key, record["size"], record["sha256"], info.etag, computed=False)
    except NotFound:
        pass
    size, sha256 = digest_of(store.iter_chunks(key))
    digest = Digest(key, size, sha256, info.etag, computed=True)
    body = {"key": key, "size": digest.size, "sha256": digest.sha256, "etag": info.etag}
    store.put_bytes(record_key, json.dumps(body, sort_keys=True).encode())
    return digest
