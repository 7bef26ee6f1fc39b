"""``POST /openai/v1/chat/completions`` on KServe's FastAPI app, with OpenAI's request and
response shapes (``stream: true`` answers with server-sent events). KServe's own OpenAI classes
import vllm, which needs CUDA; this route serves the same shapes from the predictor."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import Counter

from medxiaohe.common.errors import InvalidInput
from medxiaohe.models.chat import ChatResult
from medxiaohe_services.model.predictor import VlmPredictor, params_from

ROUTE = "/openai/v1/chat/completions"
# What this route implements; any other field gets a 400 naming it rather than being ignored.
FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "stream",
        "response_format",
        "n",
    }
)
CANCELLED = Counter(
    "medxiaohe_predictor_cancelled_total",
    "Generations stopped because the client went away",
    ["stream"],
)


def add_routes(app: FastAPI, predictor: VlmPredictor) -> None:
    async def chat_completions(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return _error("the body must be a JSON object")
        try:
            if not isinstance(body, dict):
                raise InvalidInput("the body must be a JSON object")
            if body.get("model") not in (None, predictor.name):
                raise InvalidInput(f"unknown model {body.get('model')!r}; this is {predictor.name}")
            unsupported = sorted(set(body) - FIELDS)
            if unsupported:
                raise InvalidInput(f"unsupported request fields: {', '.join(unsupported)}")
            if body.get("n", 1) != 1:
                raise InvalidInput("n must be 1")
            messages = body.get("messages")
            if not isinstance(messages, list):
                raise InvalidInput("messages must be a list")
            params = params_from(body)
            if not predictor.ready:
                return JSONResponse({"error": {"message": "model not loaded"}}, status_code=503)
            cancel = threading.Event()  # set when the client goes away: generation stops
            if body.get("stream"):
                # validate before the 200 goes out: errors after it cannot be a 400
                stream = predictor.model.stream(messages, params, cancel)
                first = await asyncio.to_thread(next, stream)
                events = _events(predictor.name, first, stream, cancel)
                return StreamingResponse(events, media_type="text/event-stream")
            result = await _unless_disconnected(
                request, cancel, asyncio.to_thread(predictor.model.chat, messages, params, cancel)
            )
        except InvalidInput as exc:
            return _error(str(exc))
        return JSONResponse(_completion(predictor.name, result))

    app.add_api_route(ROUTE, chat_completions, methods=["POST"])


async def _unless_disconnected(
    request: Request, cancel: threading.Event, work: Awaitable[ChatResult]
) -> ChatResult:
    """The work's result; while it runs, a client that disconnects sets ``cancel``."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait({task}, timeout=0.2)
        if not task.done() and not cancel.is_set() and await request.is_disconnected():
            cancel.set()
            CANCELLED.labels("false").inc()
    return task.result()


def _error(message: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return JSONResponse(body, status_code=400)


def _completion(model: str, result: ChatResult) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "total_tokens": result.usage.total_tokens,
        },
    }


async def _events(
    model: str, first: str | ChatResult, rest: Iterator[str | ChatResult], cancel: threading.Event
) -> AsyncIterator[bytes]:
    """chat.completion.chunk events: the role, text deltas, the finish reason with usage, [DONE].
    When the client goes away the response stops reading us: ``cancel`` stops the generation."""
    finished = False
    try:
        async for event in _chunks(model, first, rest):
            yield event
        finished = True
    finally:
        if not finished:
            CANCELLED.labels("true").inc()
        cancel.set()


async def _chunks(
    model: str, first: str | ChatResult, rest: Iterator[str | ChatResult]
) -> AsyncIterator[bytes]:
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""})
    item: str | ChatResult | None = first
    while item is not None:
        if isinstance(item, ChatResult):
            usage = _completion(model, item)["usage"]
            yield chunk({}, item.finish_reason, usage=usage)
            break
        yield chunk({"content": item})
        item = await asyncio.to_thread(next, rest, None)
    yield b"data: [DONE]\n\n"
