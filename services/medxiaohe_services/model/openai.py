"""``POST /openai/v1/chat/completions`` and ``GET /openai/v1/models`` on KServe's FastAPI app,
with OpenAI's request and response shapes (``stream: true`` answers with server-sent events).
KServe's own OpenAI classes import vllm, which needs CUDA; these routes serve the same shapes
from the predictor."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import Counter, Histogram

from medxiaohe.common.errors import InvalidInput
from medxiaohe.models.chat import ChatResult
from medxiaohe.models.tools import ToolCall, parse_output, prepare
from medxiaohe_services.model.predictor import VlmPredictor, params_from
from medxiaohe_services.runtime.tracing import server_span

log = logging.getLogger("medxiaohe.predictor")
ROUTE = "/openai/v1/chat/completions"
MODELS_ROUTE = "/openai/v1/models"
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
        "tools",
        "tool_choice",
    }
)
CANCELLED = Counter(
    "medxiaohe_predictor_cancelled_total",
    "Generations stopped because the client went away",
    ["stream"],
)
LATENCY = Histogram(
    "medxiaohe_predictor_chat_seconds",
    "Answered chat requests: seconds to the whole answer, or to the first event of a stream",
    ["stream"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def add_routes(app: FastAPI, predictor: VlmPredictor) -> None:
    async def chat_completions(request: Request) -> Response:
        began = time.perf_counter()
        attributes = {"http.request.method": "POST", "http.route": ROUTE}
        # continues the caller's trace (the report's, through the model client's traceparent)
        with server_span(f"POST {ROUTE}", request.headers, attributes) as span:
            try:
                response = await answer(request)
            except Exception:  # the message may quote the request: the log has the type alone
                log.exception("chat failed")
                body = {"error": {"message": "internal error; see the server log", "code": None}}
                response = JSONResponse(body, status_code=500)
            span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code == 200:
            stream = "true" if isinstance(response, StreamingResponse) else "false"
            LATENCY.labels(stream).observe(time.perf_counter() - began)
        return response

    async def answer(request: Request) -> Response:
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
            messages, schema, choice = prepare(
                messages, params.json_schema, body.get("tools"), body.get("tool_choice")
            )
            params = replace(params, json_schema=schema)
            if not predictor.ready:
                return JSONResponse({"error": {"message": "model not loaded"}}, status_code=503)
            cancel = threading.Event()  # set when the client goes away: generation stops
            if choice != "none":  # a call is parsed whole: generate, then answer
                work = predictor.complete(messages, params, cancel)
                result = await _unless_disconnected(request, cancel, work)
                content, calls = parse_output(result.text, choice)
                if body.get("stream"):
                    events = _answer_events(predictor.name, result, content, calls)
                    return StreamingResponse(events, media_type="text/event-stream")
                return JSONResponse(_completion(predictor.name, result, content, calls))
            if body.get("stream"):
                # validate before the 200 goes out: errors after it cannot be a 400
                stream = predictor.model.stream(messages, params, cancel)
                first = await asyncio.to_thread(next, stream)
                events = _events(predictor.name, first, stream, cancel)
                return StreamingResponse(events, media_type="text/event-stream")
            work = predictor.complete(messages, params, cancel)
            result = await _unless_disconnected(request, cancel, work)
        except InvalidInput as exc:
            return _error(str(exc))
        return JSONResponse(_completion(predictor.name, result))

    async def models(request: Request) -> Response:
        """OpenAI's model list: this model, with where it runs (family, device, dtype,
        attention, GPUs): the runtime's health details."""
        model = {"id": predictor.name, "object": "model", "owned_by": "medxiaohe"}
        return JSONResponse({"object": "list", "data": [model | predictor.placement]})

    app.add_api_route(ROUTE, chat_completions, methods=["POST"])
    app.add_api_route(MODELS_ROUTE, models, methods=["GET"])


async def _unless_disconnected(
    request: Request, cancel: threading.Event, work: Awaitable[ChatResult]
) -> ChatResult:
    """The work's result; a client that disconnects meanwhile sets ``cancel``. The server
    tells of the disconnect (no polling: a wake-up of this loop takes the GIL from the
    generation)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if gone.done() and not task.done():
            cancel.set()
            CANCELLED.labels("false").inc()
        return await task
    finally:
        gone.cancel()


async def _disconnect(request: Request) -> None:
    """Returns once the client has gone (the body has been read: what is left is that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _error(message: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return JSONResponse(body, status_code=400)


def _completion(
    model: str,
    result: ChatResult,
    content: str | None = None,
    calls: list[ToolCall] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    if calls is not None:  # a request with tools
        message["content"] = content
        if calls:
            message["tool_calls"] = [c.as_dict() for c in calls]
    finish = "tool_calls" if calls else result.finish_reason
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "total_tokens": result.usage.total_tokens,
        },
    }


async def _answer_events(
    model: str, result: ChatResult, content: str | None, calls: list[ToolCall]
) -> AsyncIterator[bytes]:
    """A whole answer as chat.completion.chunk events: the role, the content or the calls,
    the finish reason with usage, [DONE]."""
    whole = _completion(model, result, content, calls)
    delta: dict[str, Any] = {"content": content} if content is not None else {}
    if calls:
        delta["tool_calls"] = [{"index": i, **c.as_dict()} for i, c in enumerate(calls)]
    frame = (whole["id"], whole["created"], model)
    yield _chunk(frame, {"role": "assistant"})
    yield _chunk(frame, delta)
    yield _chunk(frame, {}, whole["choices"][0]["finish_reason"], usage=whole["usage"])
    yield b"data: [DONE]\n\n"


def _chunk(
    frame: tuple[str, int, str], delta: dict[str, Any], finish: str | None = None, **extra: Any
) -> bytes:
    """One server-sent chat.completion.chunk event; ``frame`` is (id, created, model)."""
    ident, created, model = frame
    body = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return f"data: {json.dumps(body)}\n\n".encode()


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
    frame = (f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model)
    yield _chunk(frame, {"role": "assistant", "content": ""})
    item: str | ChatResult | None = first
    while item is not None:
        if isinstance(item, ChatResult):
            usage = _completion(model, item)["usage"]
            yield _chunk(frame, {}, item.finish_reason, usage=usage)
            break
        yield _chunk(frame, {"content": item})
        item = await asyncio.to_thread(next, rest, None)
    yield b"data: [DONE]\n\n"
