"""An ASGI app served over HTTPS beside a process's gRPC services, with the same certificates:
a client certificate from the platform CA names the caller (``extensions.tls.client_cn``), or
the app takes a bearer token. uvicorn runs in its own thread and event loop, so its signal
handling stays out of the platform's drain."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any

from medxiaohe.common.settings import Settings
from medxiaohe_services.runtime.tls import ClientCertProtocol

log = logging.getLogger("medxiaohe.web")


def https_config(app: Any, settings: Settings, port: int) -> Any:
    """uvicorn's config for ``app``: the platform's server certificate, client certificates
    optional (a certificate, or a bearer token the app checks), the caller's name in the scope;
    plaintext when the settings say insecure or name no certificates."""
    import uvicorn

    tls: dict[str, Any] = {}
    if settings.tls_cert and settings.tls_key and settings.tls_client_ca and not settings.insecure:
        tls = {
            "ssl_certfile": str(settings.tls_cert),
            "ssl_keyfile": str(settings.tls_key),
            "ssl_ca_certs": str(settings.tls_client_ca),
            "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        }
    return uvicorn.Config(
        app,
        host=settings.grpc_host,
        port=port,
        http=ClientCertProtocol,
        log_config=None,
        access_log=False,  # a line per request, empty under the project's formatter
        timeout_graceful_shutdown=int(settings.drain_grace_s),
        **tls,
    )


class WebServer:
    def __init__(self, app: Any, settings: Settings, port: int) -> None:
        import uvicorn

        config = https_config(app, settings, port)
        self.server = uvicorn.Server(config)
        self.scheme = "https" if config.ssl_certfile else "http"
        self._thread = threading.Thread(target=self.server.run, name="web", daemon=True)

    def start(self, timeout: float = 30) -> str:
        """Serve; returns the base URL once the socket listens."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the web server did not start")
            time.sleep(0.05)
        config = self.server.config
        host = "127.0.0.1" if config.host in ("0.0.0.0", "127.0.0.1") else config.host  # noqa: S104
        (socket,) = self.server.servers[0].sockets
        return f"{self.scheme}://{host}:{socket.getsockname()[1]}"

    def stop(self, timeout: float = 30) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
