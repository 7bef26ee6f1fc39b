"""The Celery app, configured from Settings.

Tasks are written to be retried safely: acks_late means a task is acknowledged only after it
finishes, so a worker that dies mid-task leaves it to be redelivered, and every task checks
for its own finished output before doing work (idempotent on its inputs).

A task that keeps killing its worker (out of memory, a crash in a parser) would be redelivered
forever: each delivery is counted in the broker, and past ``task_max_deliveries`` the task is
moved to the dead-letter queue, which no worker consumes, for an operator to look at, and its
result is a failure (``DeadLettered``). Each task has a hard time limit and each pool process a
memory ceiling; the broker's visibility timeout is longer than the time limit, so a running
shard is never handed to a second worker.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery.exceptions import Ignore

from medxiaohe.common.secrets import required_secret
from medxiaohe.common.settings import Settings
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.entities.tree import EntityTree
from medxiaohe.storage import ArtifactStore, open_store

if TYPE_CHECKING:
    from medxiaohe_services.worker.dedup import RedisIndex

DEAD_LETTER = "medxiaohe.dead-letter"
DELIVERIES = "medxiaohe:deliveries:"


class DeadLettered(Exception):
    """The result of a task moved to the dead-letter queue."""


class CountedTask(Task):  # type: ignore[misc]
    """Counts its deliveries in the broker; past the limit it goes to the dead-letter queue."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        app: MedxCelery = self.app
        request = self.request
        if not request.is_eager and request.id and app.settings.broker_url.startswith("redis"):
            key = f"{DELIVERIES}{request.id}:{request.retries}"
            deliveries = app.counter.incr(key)
            app.counter.expire(key, 7 * 24 * 3600)
            if deliveries > app.settings.task_max_deliveries:
                self.apply_async(args, kwargs, task_id=request.id, queue=DEAD_LETTER)
                # its result says so: whoever waits for it stops waiting (a dispatcher may
                # send the work again, as a new task with its own count)
                dead = DeadLettered(f"delivered {deliveries - 1} times; moved to {DEAD_LETTER}")
                self.backend.mark_as_failure(request.id, dead, request=request)
                raise Ignore()
        return super().__call__(*args, **kwargs)


class MedxCelery(Celery):  # type: ignore[misc]
    settings: Settings

    @cached_property
    def counter(self) -> Any:
        """The broker's Redis, where deliveries are counted (and the dedup index kept)."""
        import redis

        return redis.Redis.from_url(self.settings.broker_url)

    def dedup_index(self, dataset: str) -> RedisIndex | None:
        """The dedup index the workers share for ``dataset`` (in the broker's Redis), or None
        (embedded: one process, its own memory)."""
        if not self.settings.broker_url.startswith("redis"):
            return None
        from medxiaohe_services.worker.dedup import RedisIndex

        return RedisIndex(self.counter, dataset, self.deid_secret)

    @cached_property
    def deid_secret(self) -> str:
        return required_secret(self.settings)

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
    if not embedded:
        required_secret(settings)  # a worker that would ingest without one refuses to start
        settings.check_transport()
    app = MedxCelery(
        "medxiaohe",
        broker=settings.broker_url or "memory://",
        backend=settings.result_backend or settings.broker_url or "cache+memory://",
        set_as_current=False,
        task_cls=CountedTask,
    )
    app.settings = settings
    visibility = int(settings.task_time_limit_s * 2)  # a running task is never handed out twice
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
        broker_connection_max_retries=None,  # a worker outlives a broker restart, however long
        # a result read or written while Redis restarts is tried again (then the caller's own
        # retry takes over: the dispatcher polls again, a task is redelivered)
        result_backend_always_retry=True,
        result_backend_max_retries=10,
        result_backend_max_sleep_between_retries_ms=1000,
        worker_hijack_root_logger=False,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=settings.task_time_limit_s * 0.9,
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1024,  # KiB
        broker_transport_options={
            "visibility_timeout": visibility,
            # kombu looks for abandoned tasks every interval x throttle seconds (100 s by
            # default, whatever the visibility timeout): here a tenth of the timeout, at most 60
            "unacked_restore_interval": max(1, min(60, visibility // 10)),
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={"visibility_timeout": visibility},
    )
    from medxiaohe_services.worker import tasks

    tasks.register(app)
    return app
