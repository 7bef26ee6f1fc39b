"""Platform services as their pods run them, one process each on 127.0.0.1 (`medxiaohe serve`):
mTLS with a development CA, a local store holding an entity tree and an evidence index."""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.servers import Service, clean_env, free_ports
from medxiaohe.entities.tree import EntityTree
from medxiaohe.evidence.indexing import add_passages
from medxiaohe.evidence.passages import Passage
from medxiaohe.storage import ArtifactStore, open_store
from medxiaohe_services.runtime.certs import DevPki, write_dev_pki
from medxiaohe_services.runtime.client import channel_credentials, secure_channel

CLIENT = "reliability"
INDEX = "bench"
SERVING = health_pb2.HealthCheckResponse.SERVING


def serving(health_port: int, service: str = "") -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return bool(reply.status == SERVING)


class Stack:
    """The named services, started on ``__enter__``, stopped (SIGTERM) on ``__exit__``."""

    def __init__(
        self,
        work: Path,
        tree: EntityTree,
        services: Iterable[str],
        passages: list[Passage] = (),  # type: ignore[assignment]
        **settings: Any,
    ) -> None:
        self.work = work
        self.pki: DevPki = write_dev_pki(work / "pki", clients=[CLIENT])
        self.store: ArtifactStore = open_store(str(work / "store"))
        tree.save(self.store)
        if passages:
            add_passages(self.store, INDEX, passages)
        self.services: dict[str, Service] = {}
        self.ports: dict[str, tuple[int, int]] = {}
        allow = json.dumps({CLIENT: ["*"]})
        self._envs = {
            name: {
                "MEDXIAOHE_GRPC_HOST": "127.0.0.1",
                "MEDXIAOHE_STORE_URI": self.store.uri,
                "MEDXIAOHE_TLS_CERT": str(self.pki.server.cert),
                "MEDXIAOHE_TLS_KEY": str(self.pki.server.key),
                "MEDXIAOHE_TLS_CLIENT_CA": str(self.pki.ca),
                "MEDXIAOHE_DEID_SECRET": secrets.token_urlsafe(48),
                "MEDXIAOHE_LOG_LEVEL": "WARNING",
                f"MEDXIAOHE_{name.upper()}__ALLOW": allow,
                f"MEDXIAOHE_{name.upper()}__INDEXES": allow,
                "OMP_NUM_THREADS": "1",  # as the chart runs the services
                **({"MEDXIAOHE_MAX_CONCURRENT_RPCS": "256"} if name == "evidence" else {}),
                **{f"MEDXIAOHE_{k.upper()}": str(v) for k, v in settings.items()},
            }
            for name in services
        }

    def __enter__(self) -> Stack:
        try:
            for name in self._envs:
                self._start(name)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, name: str, attempts: int = 3) -> None:
        """Start a service on ports found free just before; again on others when one was taken
        meanwhile (an outgoing connection's ephemeral port can land on it)."""
        for attempt in range(attempts):
            port, health = free_ports(2)
            env = {"MEDXIAOHE_GRPC_PORT": str(port), "MEDXIAOHE_HEALTH_PORT": str(health)}
            ready: Callable[[], bool] = functools.partial(serving, health)
            service = Service(
                name, clean_env(**self._envs[name], **env), self.work / f"{name}.log", ready
            )
            self.services[name], self.ports[name] = service, (port, health)
            try:
                service.start(timeout=180)
                return
            except RuntimeError as exc:
                service.stop()
                if "bind" not in str(exc) or attempt == attempts - 1:
                    raise

    def __exit__(self, *exc: object) -> None:
        for service in self.services.values():
            service.stop()

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name][0]}"

    def serving(self, name: str) -> bool:
        try:
            return serving(self.ports[name][1])
        except grpc.RpcError:
            return False

    def channel(self, name: str) -> grpc.Channel:
        paths = self.pki.clients[CLIENT]
        return secure_channel(self.target(name), self.pki.ca, paths.cert, paths.key)

    def aio_channel(self, name: str) -> grpc.aio.Channel:
        paths = self.pki.clients[CLIENT]
        credentials = channel_credentials(self.pki.ca, paths.cert, paths.key)
        options = [("grpc.max_receive_message_length", 64 << 20)]  # a long note's mentions
        return grpc.aio.secure_channel(self.target(name), credentials, options=options)
