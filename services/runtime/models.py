"""The model a service talks to: an OpenAI-compatible endpoint (on a cluster), or one model
loaded in this process and shared by every service that uses it (``medxiaohe up``). Either way
a readiness check says whether it answers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from medxiaohe.common.errors import MedxError, NotReady, Unavailable
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
    url: str, verify: str | bool, cert: tuple[str, str] | None = None, api_key: str = ""
) -> Callable[[], None]:
    """A readiness check: the endpoint answers, and accepts this service's credentials. It
    asks for a chat completion of no messages, which every OpenAI-compatible server refuses
    (400) after authenticating the caller and before generating anything: 401 or 403 means
    our certificate or key is refused, and the service is not ready."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    probe = {"messages": [], "max_tokens": 1}

    def check() -> None:
        try:
            reply = httpx.post(
                url.rstrip("/") + "/chat/completions",
                json=probe,
                headers=headers,
                timeout=2.0,
                verify=tls_verify(verify, cert),
            )
        except httpx.HTTPError:
            raise Unavailable(f"the model endpoint {url} cannot be reached") from None
        if reply.status_code in (401, 403):
            raise Unavailable(
                f"the model endpoint {url} refuses this service's credentials "
                f"(HTTP {reply.status_code})"
            )

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
        check = endpoint_check(url, verify, cert, api_key)
        return ModelEndpoint(client, url, lambda: name, check)
    if settings.local_model_uri:
        model = local_model(settings.local_model_uri, settings)
        return ModelEndpoint(model, f"in-process:{model.uri}", lambda: model.version, model.check)
    return None


def may_judge(uri: str, settings: Settings) -> bool:
    """Whether the model at ``uri`` says, in its card, that it may grade (``"judge": true``):
    a model loaded for reports (the tiny one, the small one) is not a judge by being there."""
    from medxiaohe.models.folders import model_card

    try:
        return model_card(uri, settings).get("judge") is True
    except MedxError:  # no card, or one that cannot be read: not a judge
        return False


def judge_endpoint(settings: Settings) -> ModelEndpoint | None:
    """The rubric judge: the configured endpoint (MEDXIAOHE_RUBRIC_JUDGE_URL), or the
    in-process model only when its card says it may judge; None otherwise (the service then
    grades deterministically and says so)."""
    if settings.rubric_judge_url:
        key = settings.rubric_judge_api_key.get_secret_value()
        return model_endpoint(settings, settings.rubric_judge_url, settings.rubric_judge_model, key)
    if settings.local_model_uri and may_judge(settings.local_model_uri, settings):
        return model_endpoint(settings, "", settings.rubric_judge_model, "")
    return None
