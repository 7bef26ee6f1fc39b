"""Server interceptors: audit + metrics (outermost), authorization, stream caps, error mapping
(innermost).

grpc.aio interceptors see only the method name, so each one wraps the method handler's
behaviour to reach the call context (peer certificate, status code) and the messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import grpc
from google.protobuf.message import Message
from prometheus_client import Counter, Histogram

from medxiaohe.common import errors
from medxiaohe.common.secrets import pseudonym
from medxiaohe_services.runtime.tls import caller_name
from medxiaohe_services.runtime.tracing import end_rpc_span, server_span

log = logging.getLogger("medxiaohe.audit")

CODES: dict[type[errors.MedxError], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.NotReady: grpc.StatusCode.UNAVAILABLE,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotConfigured: grpc.StatusCode.FAILED_PRECONDITION,
}
OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")
INSECURE_IDENTITY = "insecure-local"
MAX_AUDIT_IDS = 50

# The usual Prometheus gRPC server metrics (go-grpc-prometheus's names and labels, which the
# common Grafana dashboards and alerts read); grpc_service is the full service name.
RPC_LABELS = ["grpc_type", "grpc_service", "grpc_method"]
RPC_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", RPC_LABELS)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, whatever their status.",
    [*RPC_LABELS, "grpc_code"],
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its end on the server.",
    RPC_LABELS,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)
GRPC_TYPES = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}

Behavior = Callable[..., Any]
Guard = Callable[
    [str, grpc.aio.ServicerContext, list[str]], contextlib.AbstractAsyncContextManager[None]
]


def caller_identity(context: grpc.aio.ServicerContext) -> str:
    """Who the verified client certificate names (its one URI SAN, else its common name); a
    fixed name on plaintext 127.0.0.1; "" when it names no one unambiguously."""
    auth = context.auth_context()
    uris = [bytes(v).decode() for v in auth.get("peer_uri") or []]
    names = [bytes(v).decode() for v in auth.get("x509_common_name") or []]
    if uris or names:
        return caller_name(uris, names)
    if not auth.get("transport_security_type"):
        return INSECURE_IDENTITY
    return ""


def certificate_fingerprint(context: grpc.aio.ServicerContext) -> str:
    """SHA-256 of the verified client certificate (PEM as the handshake gave it), or ""."""
    pems = context.auth_context().get("x509_pem_cert") or []
    return hashlib.sha256(bytes(pems[0])).hexdigest() if pems else ""


def record_ids(message: Message, depth: int = 2) -> list[str]:
    """Values of `request_id` and `*_id` string fields, one nested level deep: never content."""
    found: list[str] = []
    for field, value in message.ListFields():
        if field.name == "request_id" or field.name.endswith("_id"):
            if isinstance(value, str) and value:
                found.append(value)
        elif depth > 1 and field.message_type is not None:
            items = value if field.is_repeated else [value]
            for item in items:
                if isinstance(item, Message):
                    found.extend(record_ids(item, depth - 1))
    return found


def _code_name(code: Any) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


class _Wrapping(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no stubs
    """Runs every call of every method inside ``self.guard``."""

    guard: Guard

    def tap_unary(self, request: Any, ids: list[str]) -> Any:
        """The request as the inner handler sees it (unchanged here)."""
        return request

    def tap_stream(
        self, stream: AsyncIterator[Any], method: str, ids: list[str]
    ) -> AsyncIterator[Any]:
        """The request stream as the inner handler sees it (unchanged here)."""
        return stream

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        kinds = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        for kind, make in kinds.items():
            behavior = getattr(handler, kind)
            if behavior is not None:
                wrapped = self._wrap(
                    behavior, method, kind.startswith("stream"), kind.endswith("stream")
                )
                return make(wrapped, handler.request_deserializer, handler.response_serializer)
        return handler

    def _wrap(self, behavior: Behavior, method: str, stream_in: bool, stream_out: bool) -> Behavior:
        guard = self.guard

        def tap(request: Any, ids: list[str]) -> Any:
            if stream_in:
                return self.tap_stream(request, method, ids)
            return self.tap_unary(request, ids)

        if stream_out:

            async def streaming(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                ids: list[str] = []
                async with guard(method, context, ids):
                    responses = behavior(tap(request, ids), context)
                    if hasattr(responses, "__aiter__"):
                        async for response in responses:
                            yield response
                    else:
                        for response in responses:
                            yield response

            return streaming

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            ids: list[str] = []
            async with guard(method, context, ids):
                result = behavior(tap(request, ids), context)
                return await result if inspect.isawaitable(result) else result
            raise AssertionError("unreachable: the guard re-raises")  # pragma: no cover

        return unary


class AuditInterceptor(_Wrapping):
    """One JSON line per call and Prometheus metrics. The line names the caller (certificate
    common name and fingerprint, peer address), the RPC, status and latency, and the record ids
    as keyed pseudonyms (an auditor with the secret can match them; a log reader learns nothing);
    never payloads."""

    def __init__(self, service_label: Mapping[str, str], key: str) -> None:
        self._label = service_label  # full service name -> short service name
        self._key = key
        self._types: dict[str, str] = {}  # method -> grpc_type

    def _wrap(self, behavior: Behavior, method: str, stream_in: bool, stream_out: bool) -> Behavior:
        self._types[method] = GRPC_TYPES[stream_in, stream_out]
        return super()._wrap(behavior, method, stream_in, stream_out)

    def tap_unary(self, request: Any, ids: list[str]) -> Any:
        ids.extend(record_ids(request))
        return request

    async def tap_stream(
        self, stream: AsyncIterator[Any], method: str, ids: list[str]
    ) -> AsyncIterator[Any]:
        async for message in stream:
            if len(ids) < MAX_AUDIT_IDS:
                ids.extend(record_ids(message))
            yield message

    @contextlib.asynccontextmanager
    async def guard(
        self, method: str, context: grpc.aio.ServicerContext, ids: list[str]
    ) -> AsyncIterator[None]:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        service, name = _split(method)
        labels = (self._types.get(method, "unary"), service, name)
        RPC_STARTED.labels(*labels).inc()
        # who is calling, read while the call is alive: a call the server tears down (a cancel
        # during shutdown) must not have its auth context read afterwards
        who = {}
        if service not in OPEN_SERVICES:
            who = {
                "caller": caller_identity(context),
                "cert_sha256": certificate_fingerprint(context),
                "peer": context.peer(),
            }
        span: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if service not in OPEN_SERVICES:  # a span per call, continuing the caller's trace
            attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
            metadata = {m.key: m.value for m in context.invocation_metadata() or ()}
            span = server_span(method.lstrip("/"), metadata, attributes)
        try:
            with span as current:
                try:
                    yield
                    code = context.code() or grpc.StatusCode.OK
                except BaseException:
                    code = context.code() or grpc.StatusCode.CANCELLED
                    raise
                finally:
                    if current is not None:
                        number = code.value[0] if isinstance(code, grpc.StatusCode) else 2
                        end_rpc_span(current, number, _code_name(code))
        finally:
            elapsed = time.perf_counter() - start
            short = self._label.get(service, service)
            code_name = _code_name(code)
            RPC_HANDLED.labels(*labels, code_name).inc()
            RPC_SECONDS.labels(*labels).observe(elapsed)
            if service not in OPEN_SERVICES:
                log.info(
                    "rpc",
                    extra={
                        "event": "rpc",
                        "service": short,
                        "rpc": name,
                        **who,
                        "code": code_name,
                        "latency_ms": round(elapsed * 1000, 2),
                        "record_ids": [pseudonym(self._key, i) for i in ids[:MAX_AUDIT_IDS]],
                    },
                )


class AuthzInterceptor(_Wrapping):
    """Lets a call through only if the caller's identity may call that RPC of that service."""

    def __init__(self, allow: Mapping[str, Mapping[str, Iterable[str]]]) -> None:
        # full service name -> caller identity -> allowed method names ("*" for all)
        self._allow = {
            svc: {c: set(m) for c, m in callers.items()} for svc, callers in allow.items()
        }

    def allowed(self, caller: str, method: str) -> bool:
        service, name = _split(method)
        if service in OPEN_SERVICES:
            return bool(caller)
        methods = self._allow.get(service, {}).get(caller, set())
        return "*" in methods or name in methods

    @contextlib.asynccontextmanager
    async def guard(
        self, method: str, context: grpc.aio.ServicerContext, ids: list[str]
    ) -> AsyncIterator[None]:
        caller = caller_identity(context)
        if not self.allowed(caller, method):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {caller or '(unauthenticated)'!r} may not call {_split(method)[1]}",
            )
        yield


class StreamLimitInterceptor(_Wrapping):
    """Caps what one client stream may carry (messages, bytes); past a cap the call fails with
    INVALID_ARGUMENT saying which. Methods named in ``byte_caps`` get their own byte cap."""

    def __init__(
        self, max_messages: int, max_bytes: int, byte_caps: Mapping[str, int] | None = None
    ) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.byte_caps = dict(byte_caps or {})

    @contextlib.asynccontextmanager
    async def guard(
        self, method: str, context: grpc.aio.ServicerContext, ids: list[str]
    ) -> AsyncIterator[None]:
        yield

    async def tap_stream(
        self, stream: AsyncIterator[Any], method: str, ids: list[str]
    ) -> AsyncIterator[Any]:
        max_bytes = self.byte_caps.get(_split(method)[1], self.max_bytes)
        count = size = 0
        async for message in stream:
            count += 1
            size += message.ByteSize()
            if count > self.max_messages:
                raise errors.InvalidInput(
                    f"a stream may carry at most {self.max_messages} messages"
                )
            if size > max_bytes:
                raise errors.InvalidInput(f"a stream may carry at most {max_bytes >> 20} MiB")
            yield message


class ErrorInterceptor(_Wrapping):
    """Maps the library's error taxonomy to status codes, once for every handler."""

    @contextlib.asynccontextmanager
    async def guard(
        self, method: str, context: grpc.aio.ServicerContext, ids: list[str]
    ) -> AsyncIterator[None]:
        try:
            yield
        except errors.MedxError as exc:
            code = next(
                (c for cls, c in CODES.items() if isinstance(exc, cls)), grpc.StatusCode.INTERNAL
            )
            await context.abort(code, str(exc))
        except (grpc.aio.AbortError, grpc.aio.UsageError, GeneratorExit):
            raise
        except NotImplementedError:
            # The generated base servicer raises this for RPCs that are not built yet.
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{_split(method)[1]} is not part of this release yet",
            )
        except Exception:
            log.exception("unhandled error", extra={"rpc": _split(method)[1]})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
