"""Forwarding what the guard lets through to another runtime in the same pod (on loopback):
the request as it came (less its credentials and hop-by-hop headers), the response streamed
back as it is produced, so token streams stay streams. An upstream that cannot be reached is
a 502; one that stops answering, a 504."""

from __future__ import annotations

from typing import Any

import httpx

from medxiaohe_services.model.guard import App, Receive, Scope, Send

# headers that belong to one connection, and the caller's credentials (not the upstream's)
DROPPED = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length",
           b"authorization", b"upgrade", b"proxy-authorization", b"te", b"trailer"}  # fmt: skip


def forward(upstream: str, timeout_s: float = 600.0) -> App:
    """An ASGI app forwarding each HTTP request to ``upstream`` (http://127.0.0.1:PORT)."""
    client = httpx.AsyncClient(
        base_url=upstream.rstrip("/"),
        timeout=httpx.Timeout(timeout_s, connect=5.0),
        follow_redirects=False,
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:  # the guard has bounded the body already
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in DROPPED]
        request = client.build_request(
            scope["method"],
            scope["path"],
            params=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            content=body,
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException:
            await _status(send, 504, b"the model runtime did not answer in time")
            return
        except httpx.HTTPError:
            await _status(send, 502, b"the model runtime cannot be reached")
            return
        try:
            kept = [(k, v) for k, v in response.headers.raw if k.lower() not in DROPPED]
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": kept})  # fmt: skip
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    return app


async def _status(send: Send, code: int, text: bytes) -> None:
    headers: list[Any] = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": text, "more_body": False})
