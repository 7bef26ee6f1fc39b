"""Sending shards to the workers and waiting for all of them, through broker outages.

Every shard task is idempotent (a finished shard is skipped), so the dispatcher may send one
again. A task that failed because something it needs was away (its retries ran out while the
store or Redis was down, its retry could not be sent to a broker that was down, its result could
not be stored) is sent again however often; a task that failed of itself is sent again up to
``rounds`` times. A task whose worker died is redelivered by the broker after its visibility
timeout; a task the broker lost (Redis killed between a worker's pop of the message and its
note of it as unacknowledged) is never redelivered, so when no shard has finished for longer
than a redelivery could take, the unfinished shards are sent again. While the broker is
unreachable, sending and polling wait and try again; the wait as a whole is bounded by
``timeout_s``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery.result import AsyncResult

from medxiaohe.common.errors import Unavailable
from medxiaohe_services.worker.app import MedxCelery

log = logging.getLogger("medxiaohe.dispatch")
TASK = "medxiaohe.ingest_shard"
POLL_S = 0.25
# how a task's failure reads when an outage caused it: Unavailable (the platform's), Reject
# (Celery: the retry could not be published), BackendStoreError (the result could not be stored)
OUTAGES = frozenset({"Unavailable", "Reject", "BackendStoreError"})


def redelivery_s(app: MedxCelery) -> float:
    """The longest a sent task can take to finish, redelivery included: the broker's
    visibility timeout (a dead worker's task comes back after it) plus the task time limit."""
    visibility = app.conf.broker_transport_options.get("visibility_timeout", 3600)
    return float(visibility + (app.conf.task_time_limit or 0))


def run_shards(
    app: MedxCelery,
    dataset: str,
    specs: list[dict[str, Any]],
    on_done: Callable[[dict[str, Any]], None] = lambda _: None,
    timeout_s: float = 24 * 3600,
    rounds: int = 3,
    stall_s: float | None = None,
) -> list[dict[str, Any]]:
    """Each shard's result, in the order of ``specs``; Unavailable when the broker stays away
    past ``timeout_s`` or a shard failed ``rounds`` times of itself. Unfinished shards are sent
    again after ``stall_s`` (default: ``redelivery_s``) without a shard finishing."""
    deadline = time.monotonic() + timeout_s
    stall_s = redelivery_s(app) if stall_s is None else stall_s
    results: dict[int, dict[str, Any]] = {}
    sent: dict[int, AsyncResult] = {}
    failures = dict.fromkeys(range(len(specs)), 0)
    progress = time.monotonic()  # when a shard last finished (or failed)
    while len(results) < len(specs):
        if time.monotonic() > deadline:
            raise Unavailable(f"{len(specs) - len(results)} shards unfinished after {timeout_s} s")
        if sent and time.monotonic() - progress > stall_s:  # lost tasks: a finished one is skipped
            log.warning("no shard finished for a while: sending again", extra={"shards": len(sent)})
            sent.clear()
            progress = time.monotonic()
        for i in (i for i in range(len(specs)) if i not in results and i not in sent):
            try:
                sent[i] = app.send_task(TASK, args=[dataset, specs[i]])
            except Exception as exc:  # the broker is away: try again on the next pass
                log.info("cannot send a shard yet", extra={"error": type(exc).__name__})
                break
        for i, result in list(sent.items()):
            try:
                state = result.state
                value: Any = result.result if state in ("SUCCESS", "FAILURE") else None
            except Exception as exc:  # the result backend is away
                log.info("cannot poll a shard yet", extra={"error": type(exc).__name__})
                break
            if state in ("SUCCESS", "FAILURE"):
                progress = time.monotonic()
            if state == "SUCCESS":
                results[i] = value
                del sent[i]
                on_done(value)
            elif state == "FAILURE":
                error = type(value).__name__
                failures[i] += error not in OUTAGES
                del sent[i]  # sent again on the next pass: a finished shard is skipped
                log.warning("a shard failed", extra={"error": error})
                if failures[i] >= rounds:
                    raise Unavailable(f"a shard failed {rounds} times; the workers' logs say why")
        time.sleep(POLL_S)
    return [results[i] for i in range(len(specs))]
