"""Run the predictor: KServe's REST app (v1/v2) plus the OpenAI-compatible chat route, behind
the guard (authentication, allow-list, body and queue bounds), and gRPC v2 behind the runtime's
own interceptors, with the project's logging. It blocks until SIGTERM/SIGINT.

KServe's ``ModelServer.start`` binds every interface without client authentication; this runs
the same app and servicer with the platform's mTLS instead: client certificates from the
platform CA (their common name is the caller), or bearer tokens where mTLS cannot be used.
Plaintext is allowed only on 127.0.0.1 (``--insecure``), with tokens, and without gRPC v2.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.logs import setup_logging
from medxiaohe.common.settings import Settings
from medxiaohe_services.model.guard import Guard
from medxiaohe_services.model.openai import add_routes
from medxiaohe_services.model.predictor import VlmPredictor
from medxiaohe_services.runtime.tls import CertificateFiles
from medxiaohe_services.runtime.tracing import setup_tracing
from medxiaohe_services.runtime.web import https_config

log = logging.getLogger("medxiaohe.predictor")
V2_SERVICE = "inference.GRPCInferenceService"
V2_READ = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata")
CERT_RELOAD_S = 30.0


def check_access(settings: Settings) -> None:
    """The predictor refuses to start where nobody could be authenticated."""
    settings.check_transport()
    if settings.insecure:
        if settings.grpc_host != "127.0.0.1":
            raise InvalidInput("a plaintext predictor (--insecure) may only bind 127.0.0.1")
        if not settings.predictor_tokens:
            raise InvalidInput("a plaintext predictor needs MEDXIAOHE_PREDICTOR_TOKENS")
    elif not (settings.tls_cert and settings.tls_key and settings.tls_client_ca):
        raise InvalidInput(
            "the predictor needs mTLS (MEDXIAOHE_TLS_CERT, MEDXIAOHE_TLS_KEY, "
            "MEDXIAOHE_TLS_CLIENT_CA), or --insecure on 127.0.0.1 with bearer tokens"
        )


def v2_allow(settings: Settings) -> dict[str, list[str]]:
    """gRPC v2 methods per caller: metadata for all, inference where allowed, never the
    repository's load and unload."""
    return {
        caller: [*V2_READ, *(["ModelInfer"] if {"ModelInfer", "*"} & set(names) else [])]
        for caller, names in settings.predictor_allow.items()
    }


async def _grpc_v2(settings: Settings, port: int, model_server: Any) -> Any:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
    from kserve.protocol.grpc.servicer import InferenceServicer

    from medxiaohe_services.runtime.interceptors import AuthzInterceptor, ErrorInterceptor
    from medxiaohe_services.runtime.server import server_credentials

    credentials = server_credentials(settings)
    limit = settings.max_message_mb << 20
    server = grpc.aio.server(
        interceptors=[  # KServe maps its own errors (bad tensors are INVALID_ARGUMENT), inside
            AuthzInterceptor({V2_SERVICE: v2_allow(settings)}),
            ErrorInterceptor(),
            ExceptionToStatusInterceptor(),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)],
    )
    servicer = InferenceServicer(model_server.dataplane, model_server.model_repository_extension)
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_secure_port(f"{settings.grpc_host}:{port}", credentials)
    await server.start()
    return server


async def _reload_certificates(files: CertificateFiles, config: Any) -> None:
    """New certificate files (a rotation) into the HTTP server's SSL context, every
    ``CERT_RELOAD_S``: new connections use them, no restart. gRPC v2 reloads on its own."""
    files.read()  # what uvicorn loaded at start
    while True:
        await asyncio.sleep(CERT_RELOAD_S)
        if config.ssl is not None and files.reload(config.ssl):
            log.info("certificates reloaded")


def guarded(app: Any, http_port: int, settings: Settings) -> tuple[Any, CertificateFiles | None]:
    """uvicorn's config for ``app`` behind the guard, with mTLS (or tokens) as settings say;
    the certificate files to watch for rotation, when TLS is on."""
    guard = Guard(
        app,
        allow=settings.predictor_allow,
        tokens={c: t.get_secret_value() for c, t in settings.predictor_tokens.items()},
        max_body=settings.predictor_max_body_mb << 20,
        max_pending=settings.predictor_max_pending,
    )
    config = https_config(guard, settings, http_port)
    files = None
    if config.ssl_certfile and settings.tls_cert and settings.tls_key and settings.tls_client_ca:
        files = CertificateFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    return config, files


def serve_guard(upstream: str, http_port: int, settings: Settings) -> None:
    """The guard alone, in front of another runtime in the same pod (KServe's Hugging Face
    runtime with vLLM, which authenticates nobody): what it lets through is forwarded to
    ``upstream`` (a loopback URL), responses streamed back."""
    import uvicorn

    from medxiaohe_services.model.proxy import forward

    setup_logging(settings.log_level)
    check_access(settings)
    config, files = guarded(forward(upstream), http_port, settings)

    async def run() -> None:
        log.info("guarding", extra={"port": http_port, "mode": "insecure" if not files else "mtls"})
        rotation = asyncio.create_task(_reload_certificates(files, config)) if files else None
        try:
            await uvicorn.Server(config).serve()
        finally:
            if rotation is not None:
                rotation.cancel()

    asyncio.run(run())


def serve(uri: str, name: str, http_port: int, grpc_port: int, settings: Settings) -> None:
    import kserve
    import uvicorn
    from kserve.model_server import app
    from kserve.protocol.rest.server import RESTServer

    setup_logging(settings.log_level)
    setup_tracing(settings, "model")
    check_access(settings)
    predictor = VlmPredictor(name, uri, settings)
    predictor.load()
    model_server = kserve.ModelServer(http_port=http_port, enable_grpc=False)
    setup_logging(settings.log_level)  # KServe's constructor installs its own handlers
    model_server.register_model(predictor)
    rest = RESTServer(
        "kserve.model_server:app",
        model_server.dataplane,
        model_server.model_repository_extension,
        http_port,
    )
    rest.create_application()  # KServe's routes, middlewares and error handlers on its app
    # less KServe's timing middleware: it logs a line per request that the project's formatter
    # empties (the chat latency is a metric instead)
    app.user_middleware = [m for m in app.user_middleware if m.cls.__name__ != "TimingMiddleware"]
    add_routes(app, predictor)
    config, files = guarded(app, http_port, settings)

    async def run() -> None:
        v2 = None
        if grpc_port and not settings.insecure:
            v2 = await _grpc_v2(settings, grpc_port, model_server)
        log.info("serving", extra={"port": http_port, "mode": "insecure" if not files else "mtls"})
        server = uvicorn.Server(config)
        rotation = asyncio.create_task(_reload_certificates(files, config)) if files else None
        try:
            await server.serve()
        finally:
            if rotation is not None:
                rotation.cancel()
            if v2 is not None:
                await v2.stop(settings.drain_grace_s)
            predictor.stop()

    asyncio.run(run())
