"""Task definitions: thin wrappers that call the library with the app's store."""

from __future__ import annotations

from typing import Any

from medxiaohe.storage.digests import digest_artifact
from medxiaohe_services.worker.app import MedxCelery


def register(app: MedxCelery) -> None:
    @app.task(name="medxiaohe.digest_artifact", bind=True, max_retries=3, default_retry_delay=2)  # type: ignore[untyped-decorator]
    def digest_artifact_task(self: Any, key: str) -> dict[str, Any]:
        """SHA-256 and size of an artifact, recorded once beside it under digests/."""
        return digest_artifact(app.store, key).as_dict()
