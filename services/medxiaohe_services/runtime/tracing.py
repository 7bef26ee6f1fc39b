"""OpenTelemetry traces, switched on by ``otel_endpoint``: a server span per RPC (the caller's
trace context from the gRPC metadata continues), a span per report step (the report's decision
trace), the context sent with each model request (``traceparent``), and a server span in the
predictor that continues it.

Spans carry names, ids, counts and status codes, never a payload: no PHI. Without an endpoint
the API's no-op tracer runs and nothing is recorded."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from medxiaohe.common.settings import Settings
from medxiaohe.report.trace import Step

log = logging.getLogger(__name__)
tracer = trace.get_tracer("medxiaohe")
_configured: list[str] = []


def setup_tracing(settings: Settings, service: str, exporter: Any = None) -> bool:
    """Send this process's spans to ``settings.otel_endpoint`` (or to ``exporter``: tests) as
    service ``medxiaohe-<service>``; once per process. Whether tracing is on."""
    if _configured:
        return True
    if exporter is None and not settings.otel_endpoint:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"medxiaohe-{service}"}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(settings.otel_endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured.append(service)
    log.info("tracing on", extra={"event": "tracing", "service": service})
    return True


@contextlib.contextmanager
def server_span(
    name: str, carrier: Mapping[str, str], attributes: Mapping[str, Any]
) -> Iterator[trace.Span]:
    """A SERVER span, current inside the block, continuing the trace ``carrier`` names (gRPC
    metadata, HTTP headers)."""
    parent = propagate.extract(dict(carrier))
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=dict(attributes)
    ) as span:
        yield span


def end_rpc_span(span: trace.Span, code: int, name: str) -> None:
    """The call's gRPC status (``rpc.grpc.status_code`` is its number); not OK is an error."""
    span.set_attribute("rpc.grpc.status_code", code)
    if code != 0:
        span.set_status(Status(StatusCode.ERROR, name))


def step_span(step: Step) -> None:
    """One report step, recorded when it ends, under the current span (the RPC's)."""
    start = int(datetime.fromisoformat(step.started).timestamp() * 1e9)
    span = tracer.start_span(
        f"report.{step.agent}.{step.kind}",
        start_time=start,
        attributes={
            "medxiaohe.step.id": step.id,
            "medxiaohe.step.agent": step.agent,
            "medxiaohe.step.kind": step.kind,
            "medxiaohe.step.parents": list(step.parents),
            **({"medxiaohe.step.tool": step.tool} if step.tool else {}),
        },
    )
    if step.status != "ok":
        span.set_status(Status(StatusCode.ERROR, step.status))
    span.end(end_time=start + step.duration_ms * 1_000_000)


def inject_headers(request: Any) -> None:
    """httpx's request hook for the model client: the current trace context (the RPC's) in
    ``traceparent``, so the predictor's span joins the report's trace."""
    propagate.inject(request.headers)
