"""The gRPC server every service runs in: one service as a pod, or all four embedded."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from medxiaohe.common.errors import InvalidInput, MedxError
from medxiaohe.common.secrets import required_secret
from medxiaohe.common.settings import ServiceName, Settings
from medxiaohe_services.runtime.interceptors import (
    INSECURE_IDENTITY,
    AuditInterceptor,
    AuthzInterceptor,
    ErrorInterceptor,
    StreamLimitInterceptor,
)
from medxiaohe_services.runtime.resources import Lifecycle
from medxiaohe_services.runtime.tls import CertificateFiles
from medxiaohe_services.runtime.web import WebServer

log = logging.getLogger("medxiaohe.server")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# SERVING from start to drain whatever the dependencies say: the liveness probe's service.
LIVENESS = "medxiaohe.liveness"


@dataclass(frozen=True)
class ServiceSpec:
    """One gRPC service: how to register it and how to tell it is ready."""

    name: ServiceName
    full_name: str
    register: Callable[[grpc.aio.Server], None]
    # Each check raises (a MedxError, ideally) while a dependency is not loaded or reachable.
    checks: Sequence[Callable[[], None]] = field(default_factory=tuple)
    # What it loads in the background: started with the platform, stopped when it stops.
    loaders: Sequence[Lifecycle] = field(default_factory=tuple)
    # A web app (ASGI) the platform serves over HTTPS on settings.review_port, when set.
    web: Any = None


def once(action: Callable[[], object]) -> Callable[[], None]:
    """A readiness check that runs ``action`` until it has succeeded once (e.g. publishing the
    shipped templates to a store that may not be reachable yet)."""
    done: list[bool] = []

    def check() -> None:
        if not done:
            action()
            done.append(True)

    return check


def connection_options(settings: Settings) -> list[tuple[str, int]]:
    """Connections that age and are kept alive: behind a Kubernetes Service a client's channel
    sticks to the replica it first reached, so each connection is closed after
    ``grpc_max_connection_age_s`` (calls in flight get the grace) and the client reconnects
    wherever the Service sends it; idle connections are pinged and dropped when dead. Clients
    may ping as often as the server does (``runtime.client.KEEPALIVE``)."""

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    options = [
        ("grpc.keepalive_time_ms", ms(settings.grpc_keepalive_s)),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if settings.grpc_max_connection_age_s:
        options += [
            ("grpc.max_connection_age_ms", ms(settings.grpc_max_connection_age_s)),
            ("grpc.max_connection_age_grace_ms", ms(settings.grpc_max_connection_age_grace_s)),
        ]
    return options


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """mTLS credentials (re-read when the files change), or None for plaintext, which is
    allowed only on 127.0.0.1."""
    if settings.insecure:
        if settings.grpc_host != "127.0.0.1":
            raise InvalidInput("plaintext gRPC (--insecure) may only bind 127.0.0.1")
        return None
    if not (settings.tls_cert and settings.tls_key and settings.tls_client_ca):
        raise InvalidInput(
            "mTLS needs MEDXIAOHE_TLS_CERT, MEDXIAOHE_TLS_KEY and MEDXIAOHE_TLS_CLIENT_CA "
            "(or --insecure on 127.0.0.1); `medxiaohe certs` writes development ones"
        )
    try:
        files = CertificateFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        return files.grpc_credentials()
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


class Platform:
    """Runs services on one port with mTLS, the interceptors, health, reflection and metrics."""

    def __init__(self, settings: Settings, specs: Sequence[ServiceSpec]) -> None:
        self.settings = settings
        # every service may see PHI: none starts without the key of its pseudonyms
        self.audit_key = required_secret(settings)
        settings.check_transport()
        self.specs = list(specs)
        self.loaders = list({id(x): x for spec in self.specs for x in spec.loaders}.values())
        self.health = HealthServicer()
        # what the kubelet probes: served by threads of its own, so no handler (nor anything
        # else that holds the event loop) can keep it from answering
        self.probe_health = health.HealthServicer()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.Server | None = None
        self._watch: asyncio.Task[None] | None = None
        self._web: WebServer | None = None
        self.review_url = ""
        self._status: dict[str, int] = {}

    def _allow_lists(self) -> dict[str, dict[str, list[str]]]:
        allow = {}
        for spec in self.specs:
            callers = dict(self.settings.service(spec.name).allow)
            if self.settings.insecure:
                callers.setdefault(INSECURE_IDENTITY, ["*"])
            allow[spec.full_name] = callers
        return allow

    async def start(self) -> int:
        """Bind, start serving, and start watching dependencies; returns the bound port."""
        creds = server_credentials(self.settings)
        limit = self.settings.max_message_mb << 20
        server = grpc.aio.server(
            interceptors=[
                AuditInterceptor({s.full_name: s.name for s in self.specs}, self.audit_key),
                AuthzInterceptor(self._allow_lists()),
                StreamLimitInterceptor(
                    self.settings.max_stream_messages,
                    self.settings.max_stream_mb << 20,
                    {"UploadArtifact": self.settings.max_upload_mb << 20},
                ),
                ErrorInterceptor(),
            ],
            maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
                *connection_options(self.settings),
            ],
        )
        for spec in self.specs:
            spec.register(server)
        for loader in self.loaders:
            loader.start()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [s.full_name for s in self.specs]
        reflection.enable_server_reflection(
            [*names, "grpc.health.v1.Health", reflection.SERVICE_NAME], server
        )
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        if creds is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, creds)
        for name in ["", *names]:
            await self._publish(name, NOT_SERVING)
        await self._publish(LIVENESS, SERVING)
        await server.start()
        self._server = server
        if self.settings.health_port:
            # kubelet's native gRPC probes speak plaintext: this port serves health only,
            # from its own threads (a blocked event loop cannot silence it)
            self._health_server = grpc.server(
                ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
                options=[("grpc.so_reuseport", 0)],
            )
            health_pb2_grpc.add_HealthServicer_to_server(self.probe_health, self._health_server)
            self._health_server.add_insecure_port(
                f"{self.settings.grpc_host}:{self.settings.health_port}"
            )
            self._health_server.start()
        if self.settings.metrics_port:
            start_http_server(self.settings.metrics_port, addr=self.settings.grpc_host)
        self._watch = asyncio.create_task(self._watch_dependencies())
        apps = [s.web for s in self.specs if s.web is not None]
        if apps and self.settings.review_port:
            self._web = WebServer(apps[0], self.settings, self.settings.review_port)
            self.review_url = await asyncio.to_thread(self._web.start)
            log.info("review app", extra={"event": "review", "review_url": self.review_url})
        log.info(
            "serving",
            extra={
                "event": "start",
                "port": self.port,
                "service": ",".join(s.name for s in self.specs),
                "mode": "insecure" if creds is None else "mtls",
            },
        )
        return self.port

    async def check_once(self) -> None:
        """Run every service's readiness checks and publish the result to health."""
        for spec in self.specs:
            status = SERVING
            for check in spec.checks:
                try:
                    await asyncio.wait_for(
                        asyncio.to_thread(check), timeout=max(self.settings.health_interval_s, 1.0)
                    )
                except Exception as exc:  # any failing check means not ready, never a crash
                    status = NOT_SERVING
                    reason = str(exc) if isinstance(exc, MedxError) else type(exc).__name__
                    if self._status.get(spec.full_name) != NOT_SERVING:
                        log.warning("not ready", extra={"service": spec.name, "reason": reason})
                    break
            await self._set(spec.full_name, status)
        overall = (
            SERVING
            if all(self._status.get(s.full_name) == SERVING for s in self.specs)
            else NOT_SERVING
        )
        await self._set("", overall)

    def is_serving(self) -> bool:
        """Whether every service reported SERVING at the last check."""
        return bool(self._status.get("") == SERVING)

    async def _publish(self, name: str, status: int) -> None:
        """The status on the main port's health service and on the probes' port."""
        await self.health.set(name, status)
        self.probe_health.set(name, status)

    async def _set(self, name: str, status: int) -> None:
        if self._status.get(name) != status:
            self._status[name] = status
            await self._publish(name, status)
            log.info(
                "health",
                extra={
                    "service": name or "*",
                    "status": health_pb2.HealthCheckResponse.ServingStatus.Name(status),
                },
            )

    async def _watch_dependencies(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.settings.health_interval_s)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: report NOT_SERVING, refuse new calls, let in-flight calls finish within grace."""
        grace = self.settings.drain_grace_s if grace is None else grace
        if self._watch:
            self._watch.cancel()
        await self.health.enter_graceful_shutdown()
        self.probe_health.enter_graceful_shutdown()
        log.info("draining", extra={"event": "drain", "grace_s": grace})
        if self._server:
            await self._server.stop(grace)
        if self._health_server:
            self._health_server.stop(0).wait()
        if self._web:
            await asyncio.to_thread(self._web.stop)
        for loader in self.loaders:
            loader.stop()

    async def serve_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain."""
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("signal received", extra={"event": "shutdown"})
        await self.stop()
