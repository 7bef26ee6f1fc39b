"""Trace context crosses the model client and the predictor's door (the gRPC side is in
integration/test_report_service.py)."""

from __future__ import annotations

import http.server
import threading
from typing import Any

from opentelemetry import trace

from medxiaohe.models.client import HttpModelClient
from medxiaohe_services.runtime.tracing import inject_headers, server_span, tracer

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_the_predictor_continues_the_callers_trace(spans: Any) -> None:
    with server_span("POST /openai/v1/chat/completions", {"traceparent": CALLER}, {}) as span:
        context = span.get_span_context()
    assert f"{context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    (finished,) = [s for s in spans.get_finished_spans() if s.name.startswith("POST /openai")]
    assert finished.parent is not None
    assert f"{finished.parent.span_id:016x}" == "b7ad6b7169203331"
    assert finished.kind == trace.SpanKind.SERVER


def test_the_model_client_sends_the_current_trace(spans: Any) -> None:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.headers.get("traceparent", ""))
            self.rfile.read(int(self.headers["content-length"]))
            body = b'{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}]}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        client = HttpModelClient(url, "m", on_request=inject_headers, retries=0)
        with tracer.start_as_current_span("report") as span:
            assert client.chat([{"role": "user", "content": "hi"}]).text == "ok"
        client.chat([{"role": "user", "content": "hi"}])  # outside a span: no context to send
    finally:
        server.shutdown()
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert seen[0].split("-")[1] == trace_id
    assert seen[1] == ""
