"""Wiring of the rubric service into the runtime.

Health is truthful: with a judge configured, the service is NOT_SERVING while the judge cannot
be reached; without one it serves with the deterministic grader and says so in each response.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from medxiaohe.common.errors import Unavailable
from medxiaohe.common.settings import Settings
from medxiaohe.models.client import HttpModelClient, tls_verify
from medxiaohe.rubric.deterministic import DeterministicGrader
from medxiaohe.rubric.model_grader import ModelGrader
from medxiaohe.rubric.rubrics import publish_builtin_sets
from medxiaohe.storage import ArtifactStore
from medxiaohe_protos.rubric.v1 import rubric_pb2, rubric_pb2_grpc
from medxiaohe_services.rubric.servicer import Graders, RubricServicer
from medxiaohe_services.runtime.server import ServiceSpec

FULL_NAME = rubric_pb2.DESCRIPTOR.services_by_name["RubricService"].full_name


def judge_check(url: str, verify: str | bool) -> None:
    """The judge answers HTTP at all (any status, 401 included); Unavailable otherwise."""
    try:
        httpx.get(url, timeout=2.0, verify=tls_verify(verify))
    except httpx.HTTPError:
        raise Unavailable("the rubric judge cannot be reached") from None


def sets_published(store: ArtifactStore) -> Callable[[], None]:
    """A readiness check: the shipped rubric sets are in the store (published once it is
    reachable), so callers can name them (``report-style``)."""
    done: list[bool] = []

    def check() -> None:
        if not done:
            publish_builtin_sets(store)
            done.append(True)

    return check


def build(settings: Settings, store: ArtifactStore) -> ServiceSpec:
    url = settings.rubric_judge_url
    verify: str | bool = str(settings.tls_client_ca) if settings.tls_client_ca else True
    model = None
    checks = [store.ping]
    if url:
        client = HttpModelClient(
            url,
            settings.rubric_judge_model,
            api_key=settings.rubric_judge_api_key.get_secret_value(),
            verify=verify,
        )
        model = ModelGrader(client, settings.rubric_judge_model or url)
        checks.append(lambda: judge_check(url, verify))
    servicer = RubricServicer(store, Graders(DeterministicGrader(), model))
    checks.append(sets_published(store))
    return ServiceSpec(
        name="rubric",
        full_name=FULL_NAME,
        register=lambda server: rubric_pb2_grpc.add_RubricServiceServicer_to_server(
            servicer, server
        ),
        checks=tuple(checks),
    )
