"""The model a service talks to: an OpenAI-compatible endpoint (on a cluster), or one model
loaded in this process and shared by every service that uses it (``medxiaohe up``). Either way
a readiness check says whether it answers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from medxiaohe.common.errors import MedxError, Unavailable
from medxiaohe.common.settings import Settings
from medxiaohe.models.client import HttpModelClient, ModelClient, tls_verify
from medxiaohe_services.runtime.resources import Loader, Resources
from medxiaohe_services.runtime.tracing import inject_headers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEndpoint:
    client: ModelClient
    endpoint: str  # the URL, or "in-process:<uri>"
    version: Callable[[], str]  # the model name asked for, or the loaded folder's version
    check: Callable[[], None]
    loaders: tuple[Loader, ...] = ()  # the in-process model, for the platform to start and stop


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


def http_endpoint(settings: Settings, url: str, name: str, api_key: str) -> ModelEndpoint:
    """The OpenAI-compatible endpoint at ``url``, reached with this service's credentials."""
    verify: str | bool = str(settings.tls_client_ca) if settings.tls_client_ca else True
    cert = None
    if settings.model_client_cert and settings.model_client_key:
        cert = (str(settings.model_client_cert), str(settings.model_client_key))
    client = HttpModelClient(
        url, name, api_key=api_key, verify=verify, cert=cert, on_request=inject_headers
    )
    return ModelEndpoint(client, url, lambda: name, endpoint_check(url, verify, cert, api_key))


def model_endpoint(resources: Resources, url: str, name: str, api_key: str) -> ModelEndpoint | None:
    """The endpoint at ``url``, else the in-process model (``local_model_uri``), else None."""
    if url:
        return http_endpoint(resources.settings, url, name, api_key)
    if uri := resources.settings.local_model_uri:
        model = resources.local_model(uri)
        endpoint = f"in-process:{model.uri}"
        return ModelEndpoint(model, endpoint, lambda: model.version, model.check, (model,))
    return None


def may_judge(uri: str, settings: Settings) -> bool:
    """Whether the model at ``uri`` says, in its card, that it may grade (``"judge": true``):
    a model loaded for reports (the tiny one, the small one) is not a judge by being there."""
    from medxiaohe.models.folders import model_card

    try:
        return model_card(uri, settings).get("judge") is True
    except MedxError:  # no card, or one that cannot be read: not a judge
        return False


def judge_endpoint(resources: Resources) -> ModelEndpoint | None:
    """The rubric judge: the configured endpoint (MEDXIAOHE_RUBRIC_JUDGE_URL), or the
    in-process model only when its card says it may judge; None otherwise (the service then
    grades deterministically and says so)."""
    settings = resources.settings
    if settings.rubric_judge_url:
        key = settings.rubric_judge_api_key.get_secret_value()
        return model_endpoint(
            resources, settings.rubric_judge_url, settings.rubric_judge_model, key
        )
    if settings.local_model_uri and may_judge(settings.local_model_uri, settings):
        return model_endpoint(resources, "", settings.rubric_judge_model, "")
    return None
