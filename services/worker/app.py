"""The Celery app, configured from Settings.

Tasks are written to be retried safely: acks_late means a task is acknowledged only after it
finishes, so a worker that dies mid-task leaves it to be redelivered, and every task checks
for its own finished output before doing work (idempotent on its inputs).
"""

from __future__ import annotations

from functools import cached_property

from celery import Celery

from medxiaohe.common.settings import Settings
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.entities.tree import EntityTree
from medxiaohe.storage import ArtifactStore, open_store


class MedxCelery(Celery):  # type: ignore[misc]
    settings: Settings

    @cached_property
    def store(self) -> ArtifactStore:
        return open_store(self.settings.store_uri, self.settings)

    @cached_property
    def tagger(self) -> DictionaryTagger:
        """Loaded on a worker's first tagging task, then kept."""
        tree = EntityTree.load(self.store, version=self.settings.met_version or None)
        return DictionaryTagger(tree)


def make_app(settings: Settings) -> MedxCelery:
    """A Celery app for settings; in-process (eager) when no broker URL is set."""
    embedded = not settings.broker_url
    app = MedxCelery(
        "medxiaohe",
        broker=settings.broker_url or "memory://",
        backend=settings.result_backend or settings.broker_url or "cache+memory://",
        set_as_current=False,
    )
    app.settings = settings
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_always_eager=embedded,
        task_eager_propagates=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    from medxiaohe_services.worker import tasks

    tasks.register(app)
    return app
