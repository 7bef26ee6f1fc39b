"""Sustained load over mTLS from one async client: TagEntities and RetrieveEvidence at a fixed
rate each, open loop (a request is sent at its time whatever the others are doing, so a slow
server cannot slow the load down and hide its own latency). Latency is measured from the time
a request was due, not from when the client got round to sending it."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import psutil

from benchmarks.stack import INDEX, Stack
from medxiaohe.evidence.retrievers import bf16_in_hardware
from medxiaohe_protos.evidence.v1 import evidence_pb2 as ev
from medxiaohe_protos.evidence.v1 import evidence_pb2_grpc as ev_grpc
from medxiaohe_protos.ingestion.v1 import ingestion_pb2 as ing
from medxiaohe_protos.ingestion.v1 import ingestion_pb2_grpc as ing_grpc

Call = Callable[[int], Awaitable[Any]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def open_loop(call: Call, rate: float, seconds: float, timeout_s: float) -> dict[str, Any]:
    """``call(i)`` for i = 0, 1, ... due at ``i / rate`` seconds, for ``seconds``."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    late: list[float] = []
    start = loop.time() + 0.05

    async def one(i: int, due: float) -> None:
        late.append(loop.time() - due)
        try:
            await asyncio.wait_for(call(i), timeout_s)
            latencies.append(loop.time() - due)
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] += 1
        except TimeoutError:
            errors["CLIENT_TIMEOUT"] += 1

    count = int(rate * seconds)
    sent: list[asyncio.Task[None]] = []
    for i in range(count):  # each request a task at its time: only those in flight exist
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        sent.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*sent)
    elapsed = loop.time() - start
    return {
        "rate_per_s": rate,
        "requests": count,
        "completed_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies, default=float("nan")) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
        "errors": sum(errors.values()),
        **({"error_codes": dict(errors)} if errors else {}),
        "client_send_lag_p99_ms": round(percentile(late, 0.99) * 1000, 2),
    }


def rss_mb(process: psutil.Process) -> float:
    return round(float(process.memory_info().rss) / 2**20, 1)


async def _load(
    stack: Stack, texts: list[str], queries: list[str], rate: float, seconds: float
) -> dict[str, Any]:
    async with stack.aio_channel("ingestion") as tagging, stack.aio_channel("evidence") as evid:
        tag = ing_grpc.IngestionServiceStub(tagging)
        retrieve = ev_grpc.EvidenceServiceStub(evid)

        async def tag_call(i: int) -> Any:
            return await tag.TagEntities(ing.TagEntitiesRequest(text=texts[i % len(texts)]))

        async def retrieve_call(i: int) -> Any:
            request = ev.RetrieveEvidenceRequest(
                index_name=INDEX, query=queries[i % len(queries)], k=10
            )
            return await retrieve.RetrieveEvidence(request)

        warm = min(rate, 50.0)  # connections, caches and the encoder warm up, unmeasured
        await asyncio.gather(
            open_loop(tag_call, warm, 2, 30), open_loop(retrieve_call, warm, 2, 30)
        )
        processes = {n: psutil.Process(s.pid) for n, s in stack.services.items()}
        processes["client"] = psutil.Process()
        before = {n: rss_mb(p) for n, p in processes.items()}
        cpu = {n: sum(p.cpu_times()[:2]) for n, p in processes.items()}
        tagged, retrieved = await asyncio.gather(
            open_loop(tag_call, rate, seconds, 30), open_loop(retrieve_call, rate, seconds, 30)
        )
        after = {n: rss_mb(p) for n, p in processes.items()}
        used = {
            n: round((sum(p.cpu_times()[:2]) - cpu[n]) / seconds, 2) for n, p in processes.items()
        }
    return {
        "TagEntities": tagged,
        "RetrieveEvidence": retrieved,
        "seconds": seconds,
        "rss_mb": {n: {"before": before[n], "after": after[n]} for n in before},
        "server_memory_growth_mb": {
            n: round(after[n] - before[n], 1) for n in before if n != "client"
        },
        "cpu_cores_used": used,
        "errors": tagged["errors"] + retrieved["errors"],
    }


def run(
    stack: Stack, texts: list[str], queries: list[str], rate: float = 200, seconds: float = 60
) -> dict[str, Any]:
    """The ``load`` figures, against a running stack with the ingestion and evidence services.
    What this process held before (the benchmark's MET, its passages) is frozen out of the
    garbage collector: its full collections stalled the client 0.8 s, late requests it blamed
    on the servers."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    try:
        result = asyncio.run(_load(stack, texts, queries, rate, seconds))
    finally:
        gc.unfreeze()
    sent = int(rate * seconds)  # the pools cycle: repeated queries may meet the encoder's cache
    # the evidence service's default: bfloat16 where this CPU multiplies it in hardware
    result["query_encoding"] = "bfloat16" if bf16_in_hardware() else "float32"
    result["distinct_texts"] = len(set(texts[: min(len(texts), sent)]))
    result["distinct_queries"] = len(set(queries[: min(len(queries), sent)]))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result
