"""Task definitions: thin wrappers that call the library with the app's store."""

from __future__ import annotations

from typing import Any

from medxiaohe.common.errors import Unavailable
from medxiaohe.storage.digests import digest_artifact
from medxiaohe_services.worker.app import MedxCelery


def register(app: MedxCelery) -> None:
    # A task retried while the store or Redis is away waits 1, 2, 4 ... s (jittered) between
    # tries, never longer than its time limit: a retry waiting past the broker's visibility
    # timeout (twice the limit) would be handed to a second worker as well.
    retries = {
        "autoretry_for": (Unavailable,),
        "retry_backoff": True,
        "retry_backoff_max": max(1, int(min(600, app.settings.task_time_limit_s))),
        "max_retries": 8,
    }

    @app.task(name="medxiaohe.digest_artifact", shared=False, **retries)  # type: ignore[untyped-decorator]
    def digest_artifact_task(key: str) -> dict[str, Any]:
        """SHA-256 and size of an artifact, recorded once beside it under digests/."""
        return digest_artifact(app.store, key).as_dict()

    @app.task(name="medxiaohe.ingest_shard", shared=False, **retries)  # type: ignore[untyped-decorator]
    def ingest_shard_task(dataset: str, spec: dict[str, Any]) -> dict[str, Any]:
        """One shard of a bulk ingest; a finished shard is skipped, so redelivery is safe."""
        from medxiaohe.corpus.ingest import ShardIngestor, ShardSpec

        shared = app.dedup_index(dataset)  # duplicates across shards and workers drop
        ingestor = ShardIngestor(
            app.store, dataset, app.tagger, app.deid_secret, dedup_index=shared
        )
        if shared is not None:
            shared.ensure_seeded(ingestor.remember_finished)
        return ingestor.process(ShardSpec(spec["shard_id"], tuple(spec["keys"]))).as_dict()
