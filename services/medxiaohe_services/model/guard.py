"""The predictor's front door, one ASGI middleware in front of KServe's app and the OpenAI route.

* **Who**: the common name of a client certificate that the TLS handshake verified against the
  platform CA (``tls.client_cn`` in the scope, put there by ``ClientCertProtocol``), else a
  bearer token from ``predictor_tokens``; anything else gets 401.
* **What**: generation routes need the caller's ``predictor_allow`` entry ("ChatCompletions",
  "ModelInfer" or "*"); health and metadata routes are open to any authenticated caller; the
  model repository routes (load/unload) are refused to everyone; other paths are 404.
* **How much**: a body over ``predictor_max_body_mb`` gets 413 before the app sees it; past
  ``predictor_max_pending`` generation requests in flight, 429 with ``Retry-After``.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# (method, path pattern, what it is): the routes KServe and this predictor serve
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/openai/v1/chat/completions"), "ChatCompletions"),
    ("POST", re.compile(r"/v1/models/[^/]+:(predict|explain)"), "ModelInfer"),
    ("POST", re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/infer"), "ModelInfer"),
    ("GET", re.compile(r"/|/v1/models(/[^/:]+)?|/v2(/health/(live|ready))?"), "read"),
    ("GET", re.compile(r"/v2/models(/[^/]+(/versions/[^/]+)?(/ready)?)?"), "read"),
    ("GET", re.compile(r"/metrics"), "read"),
    ("GET", re.compile(r"/openai/v1/models"), "read"),
]
REPOSITORY = re.compile(r"/v2/repository(/.*)?")
GENERATION = ("ChatCompletions", "ModelInfer")


def route_of(method: str, path: str) -> str:
    """What a request is: a permission name, "read", "repository", or "" (not served)."""
    if REPOSITORY.fullmatch(path):
        return "repository"
    for verb, pattern, name in ROUTES:
        if method == verb and pattern.fullmatch(path):
            return name
    return ""


class Guard:
    def __init__(
        self,
        app: App,
        *,
        allow: Mapping[str, list[str]],
        tokens: Mapping[str, str],
        max_body: int,
        max_pending: int,
    ) -> None:
        self.app = app
        self.allow = {caller: set(names) for caller, names in allow.items()}
        self.tokens = dict(tokens)  # caller -> token
        self.max_body = max_body
        self.max_pending = max_pending
        self.pending = 0

    def identity(self, scope: Scope) -> str:
        tls = scope.get("extensions", {}).get("tls", {})
        if tls.get("client_cn"):
            return str(tls["client_cn"])
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            for caller, known in self.tokens.items():
                if hmac.compare_digest(token.encode(), known.encode()):
                    return caller
        return ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the server's own startup and shutdown
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # websockets and whatever else: no route here needs them
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        route = route_of(scope["method"], scope["path"])
        caller = self.identity(scope)
        if not caller:
            await _reply(send, 401, "authenticate with a client certificate or a bearer token")
            return
        if route == "repository":
            await _reply(send, 403, "the model repository API is disabled on this predictor")
            return
        if not route:
            await _reply(send, 404, "not found")
            return
        if route != "read" and not ({route, "*"} & self.allow.get(caller, set())):
            await _reply(send, 403, f"caller {caller!r} may not call {route}")
            return
        if route not in GENERATION:
            await self.app(scope, receive, send)
            return
        body = await self._body(scope, receive, send)
        if body is None:
            return
        if self.pending >= self.max_pending:
            await _reply(send, 429, "the model is busy; retry later", {"retry-after": "1"})
            return
        self.pending += 1
        try:
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.pending -= 1

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None (and a 413 sent) once it passes the cap."""
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            await _reply(send, 413, f"the body may be at most {self.max_body >> 20} MiB")
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _reply(send, 413, f"the body may be at most {self.max_body >> 20} MiB")
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The already read body once, then the connection's own messages (its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(
    send: Send, status: int, message: str, headers: Mapping[str, str] | None = None
) -> None:
    body = json.dumps({"error": {"message": message, "code": status}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
