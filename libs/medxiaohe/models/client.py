"""The model client: one interface, ``chat(messages, images, params) -> ChatReply`` (text and
usage) and ``stream(...)``, over any OpenAI-compatible endpoint (HTTP) or a model loaded in this
process. The report and rubric services depend only on this."""

from __future__ import annotations

import base64
import json
import random
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import httpx

from medxiaohe.common.errors import InvalidInput, Unavailable
from medxiaohe.models.chat import ChatModel, ChatParams, ChatResult, Usage
from medxiaohe.models.tools import ToolCall, parse_output, prepare

RETRY_STATUS = {429, 500, 502, 503, 504}
DEFAULT_PARAMS = ChatParams()


@dataclass(frozen=True)
class ChatReply:
    text: str
    finish_reason: str  # "stop", "length" or "tool_calls"
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()


class ModelClient(Protocol):
    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        images: Sequence[bytes | str] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> ChatReply: ...

    def stream(
        self,
        messages: Sequence[dict[str, Any]],
        images: Sequence[bytes | str] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> Iterator[str | ChatReply]: ...

    def call_tools(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        tool_choice: str | dict[str, Any] = "auto",
        images: Sequence[bytes | str] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> ChatReply:
        """A turn with OpenAI ``tools``: the reply's ``tool_calls``, or its text."""
        ...


def with_images(
    messages: Sequence[dict[str, Any]], images: Sequence[bytes | str]
) -> list[dict[str, Any]]:
    """The messages with the images (encoded bytes, or data:/s3:// URIs) appended to the last
    user message as ``image_url`` parts."""
    out = [dict(m) for m in messages]
    if not images:
        return out
    users = [i for i, m in enumerate(out) if m.get("role") == "user"]
    if not users:
        raise InvalidInput("images need a user message to go with")
    last = out[users[-1]]
    content = last.get("content", "")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    for image in images:
        url = image if isinstance(image, str) else _data_uri(image)
        parts.append({"type": "image_url", "image_url": {"url": url}})
    last["content"] = parts
    return out


def _data_uri(data: bytes) -> str:
    kind = "png" if data.startswith(b"\x89PNG") else "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def _body(params: ChatParams) -> dict[str, Any]:
    body: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
    }
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if params.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": "output",
                "strict": True,
                "schema": json.loads(params.json_schema),
            },
        }
    return body


def tls_verify(verify: str | bool, cert: tuple[str, str] | None = None) -> ssl.SSLContext | bool:
    """What httpx verifies a server with: system CAs (True), a CA bundle's path, or nothing;
    with ``cert`` (certificate and key files), the client certificate it presents (mTLS)."""
    if cert is None:
        return ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(*cert)
    return context


def _reply(result: ChatResult) -> ChatReply:
    return ChatReply(result.text, result.finish_reason, result.usage)


class LocalModelClient:
    """The in-process backend, over the same engine the predictor runs."""

    def __init__(self, model: ChatModel) -> None:
        self._model = model

    @classmethod
    def from_folder(cls, folder: Path) -> LocalModelClient:
        """The vision-language (or causal) model saved in ``folder``, loaded in-process."""
        from medxiaohe.models.vlm import load_vlm

        return cls(ChatModel(load_vlm(folder)))

    @property
    def model(self) -> ChatModel:
        return self._model

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        images: Sequence[bytes | str] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> ChatReply:
        return _reply(self.model.chat(with_images(messages, images), params))

    def stream(
        self,
        messages: Sequence[dict[str, Any]],
        images: Sequence[bytes | str] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> Iterator[str | ChatReply]:
        for item in self.model.stream(with_images(messages, images), params):
            yield item if isinstance(item, str) else _reply(item)

    def call_tools(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        tool_choice: str | dict[str, Any] = "auto",
        images: Sequence[bytes | str] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> ChatReply:
        prepared, schema, mode = prepare(messages, params.json_schema, list(tools), tool_choice)
        result = self.model.chat(with_images(prepared, images), replace(params, json_schema=schema))
        content, calls = parse_output(result.text, mode)
        finish = "tool_calls" if calls else result.finish_reason
        return ChatReply(content or "", finish, result.usage, tuple(calls))


class HttpModelClient:
    """Any OpenAI-compatible endpoint: ``base_url`` up to and including ``/v1`` (this
    platform's predictor: ``http://host:port/openai/v1``). Retries 429 and 5xx answers and
    connection failures with exponential backoff and jitter (``Retry-After`` wins), then
    raises Unavailable; a 400 raises InvalidInput with the endpoint's reason."""

    def __init__(
        self,
        base_url: str,
        model: str = "",
        *,
        api_key: str = "",
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        verify: str | bool = True,
        cert: tuple[str, str] | None = None,
        on_request: Callable[[httpx.Request], None] | None = None,
    ) -> None:
        """``on_request`` sees every request before it is sent (the services add the trace
        context's headers there)."""
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        # verify: True (system CAs), a CA bundle's path (the platform CA), or False (tests only);
        # cert: the client certificate and key this caller presents (the predictor's mTLS)
        context = tls_verify(verify, cert)
        hooks = {"request": [on_request]} if on_request else {}
        self._http = httpx.Client(
            timeout=timeout_s, headers=headers, verify=context, event_hooks=hooks
        )

    def close(self) -> None:
        self._http.close()

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        images: Sequence[bytes | str] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> ChatReply:
        return self._answer(self._request(messages, images, params, stream=False))

    def stream(
        self,
        messages: Sequence[dict[str, Any]],
        images: Sequence[bytes | str] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> Iterator[str | ChatReply]:
        body = self._request(messages, images, params, stream=True)
        text, finish, usage = [], "stop", Usage(0, 0)
        with self._send(body) as response:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    u = chunk["usage"]
                    usage = Usage(u.get("prompt_tokens", 0), u.get("completion_tokens", 0))
                for choice in chunk.get("choices", []):
                    piece = choice.get("delta", {}).get("content")
                    if piece:
                        text.append(piece)
                        yield piece
                    finish = choice.get("finish_reason") or finish
        yield ChatReply("".join(text), finish, usage)

    def call_tools(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        tool_choice: str | dict[str, Any] = "auto",
        images: Sequence[bytes | str] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> ChatReply:
        body = self._request(messages, images, params, stream=False)
        return self._answer(body | {"tools": list(tools), "tool_choice": tool_choice})

    def _answer(self, body: dict[str, Any]) -> ChatReply:
        """One non-streamed completion: its text or tool calls, finish reason and usage."""
        with self._send(body) as response:
            data = json.loads(response.read())
        choice, usage = data["choices"][0], data.get("usage") or {}
        calls = tuple(
            ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
            for c in choice["message"].get("tool_calls") or ()
        )
        return ChatReply(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason") or "stop",
            usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
            tool_calls=calls,
        )

    def _request(
        self,
        messages: Sequence[dict[str, Any]],
        images: Sequence[bytes | str],
        params: ChatParams,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        body = {"messages": with_images(messages, images), **_body(params), "stream": stream}
        if self.model:
            body["model"] = self.model
        return body

    def _send(self, body: dict[str, Any]) -> _Closing:
        """The open response of the first attempt that is not retryable."""
        last, wait = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                jitter = 0.5 + random.random() / 2  # noqa: S311 (not cryptographic)
                time.sleep(wait or self.backoff_s * 2 ** (attempt - 1) * jitter)
            wait = 0.0
            try:
                request = self._http.build_request("POST", self.url, json=body)
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                last = type(exc).__name__
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                after = response.headers.get("retry-after", "")
                wait = min(float(after), 30.0) if after.isdigit() else 0.0
                response.close()
                continue
            if response.status_code >= 400:
                response.read()
                response.close()
                if response.status_code in (401, 403):  # ours to fix, not the caller's
                    raise Unavailable(
                        f"model endpoint refused this service's credentials "
                        f"(HTTP {response.status_code}): {_reason(response)}"
                    )
                raise InvalidInput(f"model endpoint refused the request: {_reason(response)}")
            return _Closing(response)
        raise Unavailable(
            f"model endpoint {self.url} failed {self.retries + 1} times (last: {last}); giving up"
        )


class _Closing:
    """A streamed response as a context manager that closes it."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    def __enter__(self) -> httpx.Response:
        return self.response

    def __exit__(self, *exc: object) -> None:
        self.response.close()


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
