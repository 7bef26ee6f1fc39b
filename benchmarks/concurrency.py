"""Concurrency against the services as their pods run them: writers racing on one evidence index,
a call whose deadline passes mid-work, and SIGTERM while writes are in flight."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import psutil

from benchmarks.stack import Stack
from medxiaohe_protos.evidence.v1 import evidence_pb2 as ev
from medxiaohe_protos.evidence.v1 import evidence_pb2_grpc as ev_grpc
from medxiaohe_protos.ingestion.v1 import ingestion_pb2 as ing
from medxiaohe_protos.ingestion.v1 import ingestion_pb2_grpc as ing_grpc


def _passage(passage_id: str) -> ev.IndexPassagesRequest:
    text = f"Note {passage_id}: community-acquired pneumonia treated with amoxicillin."
    return ev.IndexPassagesRequest(passage=ev.Passage(passage_id=passage_id, text=text))


async def _index(stub: Any, name: str, request_id: str, ids: list[str]) -> Any:
    first, *rest = [_passage(i) for i in ids]
    first.index_name, first.request_id = name, request_id
    return await stub.IndexPassages(iter([first, *rest]), timeout=120)


async def _missing(stub: Any, name: str, ids: list[str]) -> list[str]:
    missing = []
    for passage_id in ids:
        try:
            await stub.GetPassage(ev.GetPassageRequest(index_name=name, passage_id=passage_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            missing.append(passage_id)
    return missing


async def _writers(stack: Stack, writers: int, each: int) -> dict[str, Any]:
    async with stack.aio_channel("evidence") as channel:
        stub = ev_grpc.EvidenceServiceStub(channel)
        ids = [[f"w{w}-{j}" for j in range(each)] for w in range(writers)]
        started = time.perf_counter()
        replies = await asyncio.gather(
            *(_index(stub, "racing", f"race-{w}", ids[w]) for w in range(writers)),
            return_exceptions=True,
        )
        seconds = time.perf_counter() - started
        done = [w for r, w in zip(replies, ids, strict=True) if not isinstance(r, Exception)]
        acknowledged = [i for w in done for i in w]
        lost = await _missing(stub, "racing", acknowledged)
    return {
        "writers": writers,
        "passages": writers * each,
        "acknowledged": len(acknowledged),
        "refused": sum(isinstance(r, Exception) for r in replies),
        "lost": len(lost),
        "seconds": round(seconds, 2),
    }


def _cpu(pid: int) -> float:
    return float(sum(psutil.Process(pid).cpu_times()[:2]))


async def _deadline(stack: Stack, text: str, deadline_s: float) -> dict[str, Any]:
    pid = stack.services["ingestion"].pid
    async with stack.aio_channel("ingestion") as channel:
        stub = ing_grpc.IngestionServiceStub(channel)
        request = ing.TagEntitiesRequest(text=text)
        await stub.TagEntities(ing.TagEntitiesRequest(text="Fever."), timeout=30)  # warm
        before = _cpu(pid)
        started = time.perf_counter()
        await stub.TagEntities(request, timeout=120)
        full_s = time.perf_counter() - started
        await asyncio.sleep(0.5)
        full_cpu = _cpu(pid) - before
        before = _cpu(pid)
        started = time.perf_counter()
        code = "OK"
        try:
            await stub.TagEntities(request, timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        ended_s = time.perf_counter() - started
        await asyncio.sleep(max(1.0, 2 * full_s))  # whatever still runs has run by now
        cancelled_cpu = _cpu(pid) - before
        alive = await stub.TagEntities(ing.TagEntitiesRequest(text="Fever."), timeout=30)
    return {
        "deadline_ms": round(deadline_s * 1000),
        "text_chars": len(text),
        "code": code,
        "ended_ms": round(ended_s * 1000, 1),
        "full_call_ms": round(full_s * 1000, 1),
        "server_cpu_full_call_s": round(full_cpu, 3),
        "server_cpu_cancelled_call_s": round(cancelled_cpu, 3),
        # the server stopped: the cancelled call cost less than half the full call's work
        "work_cancelled": cancelled_cpu < 0.5 * full_cpu,
        "serving_after": bool(alive.provenance.code_version),
    }


async def _sigterm(stack: Stack, writers: int, seconds: float) -> dict[str, Any]:
    service = stack.services["evidence"]
    acknowledged: list[str] = []
    refused: dict[str, int] = {}
    sent = 0
    stop = asyncio.Event()

    async def write(w: int) -> None:
        nonlocal sent
        n = 0
        async with stack.aio_channel("evidence") as channel:
            stub = ev_grpc.EvidenceServiceStub(channel)
            while not stop.is_set():
                passage_id = f"t{w}-{n}"
                n += 1
                sent += 1
                try:
                    await _index(stub, "drained", f"d-{passage_id}", [passage_id])
                    acknowledged.append(passage_id)
                except grpc.aio.AioRpcError as exc:
                    refused[exc.code().name] = refused.get(exc.code().name, 0) + 1
                    await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(write(w)) for w in range(writers)]
    await asyncio.sleep(seconds / 2)
    assert service.process is not None
    service.process.terminate()  # SIGTERM: drain, then exit
    at_signal = len(acknowledged)
    exit_code = await asyncio.to_thread(service.process.wait, 120)
    stop.set()
    await asyncio.gather(*tasks)
    service.start(timeout=180)
    async with stack.aio_channel("evidence") as channel:
        lost = await _missing(ev_grpc.EvidenceServiceStub(channel), "drained", acknowledged)
    return {
        "writers": writers,
        "sent": sent,
        "acknowledged": len(acknowledged),
        "acknowledged_before_sigterm": at_signal,
        "refused": refused,
        "exit_code": exit_code,
        "lost": len(lost),
    }


def run(
    stack: Stack,
    text: str,
    writers: int = 8,
    each: int = 25,
    deadline_s: float = 0.1,
    sigterm_s: float = 4.0,
) -> dict[str, Any]:
    """The ``concurrency`` figures against a stack with the ingestion and evidence services."""
    return {
        "index_writers": asyncio.run(_writers(stack, writers, each)),
        "deadline": asyncio.run(_deadline(stack, text, deadline_s)),
        "sigterm": asyncio.run(_sigterm(stack, writers, sigterm_s)),
    }
