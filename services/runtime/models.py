"""The model a service talks to: an OpenAI-compatible endpoint (on a cluster), or one model
loaded in this process and shared by every service that uses it (``medxiaohe up``). Either way
a readiness check says whether it answers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from medxiaohe.common.errors import NotReady, Unavailable
from medxiaohe.common.settings import Settings
from medxiaohe.models.chat import ChatModel
from medxiaohe.models.client import HttpModelClient, LocalModelClient, ModelClient, tls_verify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEndpoint:
    client: ModelClient
    endpoint: str  # the URL, or "in-process:<uri>"
    version: Callable[[], str]  # the model name asked for, or the loaded folder's version
    check: Callable[[], None]


def endpoint_check(
    url: str, verify: str | bool, cert: tuple[str, str] | None = None
) -> Callable[[], None]:
    """A readiness check: the endpoint answers HTTP at all (any status, 401 included)."""

    def check() -> None:
        try:
            httpx.get(url, timeout=2.0, verify=tls_verify(verify, cert))
        except httpx.HTTPError:
            raise Unavailable(f"the model endpoint {url} cannot be reached") from None

    return check


class LocalModel(LocalModelClient):
    """A model folder loaded in the background; until it is in, calls raise NotReady."""

    def __init__(self, uri: str, settings: Settings) -> None:
        self.uri = uri
        self.version = ""
        self._loaded: ChatModel | None = None
        self._error = ""
        threading.Thread(
            target=self._load, args=(settings,), name="model-loader", daemon=True
        ).start()

    def _load(self, settings: Settings) -> None:
        from medxiaohe.models.folders import model_folder
        from medxiaohe.models.vlm import load_vlm

        try:
            folder = model_folder(self.uri, settings)
            self._loaded = ChatModel(load_vlm(folder))
            self.version = folder.name
            log.info("model loaded", extra={"component": "model", "version": self.version})
        except Exception as exc:  # reported by readiness
            self._error = type(exc).__name__
            log.warning("model not loaded", extra={"reason": self._error})

    @property
    def model(self) -> ChatModel:
        if self._loaded is None:
            raise NotReady(f"the in-process model is {self._error or 'loading'}")
        return self._loaded

    def check(self) -> None:
        _ = self.model


_LOCAL: dict[str, LocalModel] = {}
_LOCK = threading.Lock()


def local_model(uri: str, settings: Settings) -> LocalModel:
    """The process's one instance of the model at ``uri``."""
    with _LOCK:
        if uri not in _LOCAL:
            _LOCAL[uri] = LocalModel(uri, settings)
        return _LOCAL[uri]


def model_endpoint(settings: Settings, url: str, name: str, api_key: str) -> ModelEndpoint | None:
    """The endpoint at ``url``, else the in-process model (``local_model_uri``), else None."""
    verify: str | bool = str(settings.tls_client_ca) if settings.tls_client_ca else True
    cert = None
    if settings.model_client_cert and settings.model_client_key:
        cert = (str(settings.model_client_cert), str(settings.model_client_key))
    if url:
        client = HttpModelClient(url, name, api_key=api_key, verify=verify, cert=cert)
        return ModelEndpoint(client, url, lambda: name, endpoint_check(url, verify, cert))
    if settings.local_model_uri:
        model = local_model(settings.local_model_uri, settings)
        return ModelEndpoint(model, f"in-process:{model.uri}", lambda: model.version, model.check)
    return None
