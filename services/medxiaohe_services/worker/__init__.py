"""The Celery worker: bulk and asynchronous work, one task per shard or artifact.

Run it with ``celery -A medxiaohe_services.worker.main worker``; with no broker configured
(the embedded default), the same tasks run in-process.
"""
