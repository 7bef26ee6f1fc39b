"""Wiring of the rubric service into the runtime.

Health is truthful: NOT_SERVING until the entity tree (the rules' tagger) is loaded and, with a
judge configured (an endpoint, or an in-process model whose card says it may judge), while the
judge cannot be reached, refuses our credentials or is loading; without a judge it serves with
the deterministic grader and says so in each response.
"""

from __future__ import annotations

from medxiaohe.rubric.deterministic import DeterministicGrader
from medxiaohe.rubric.model_grader import ModelGrader
from medxiaohe.rubric.rubrics import publish_builtin_sets
from medxiaohe_protos.rubric.v1 import rubric_pb2, rubric_pb2_grpc
from medxiaohe_services.rubric.servicer import Graders, RubricServicer
from medxiaohe_services.runtime.models import judge_endpoint
from medxiaohe_services.runtime.resources import Lifecycle, Resources
from medxiaohe_services.runtime.server import ServiceSpec, once

FULL_NAME = rubric_pb2.DESCRIPTOR.services_by_name["RubricService"].full_name


def build(resources: Resources) -> ServiceSpec:
    settings, store = resources.settings, resources.store
    judge = judge_endpoint(resources)  # never a report model that is not meant to judge
    model = None
    # the rules read mentions with ConText through the Medical Entity Tree: not ready without
    tagging = resources.tagging
    checks = [store.ping, tagging.check]
    loaders: list[Lifecycle] = [tagging]
    if judge is not None:
        model = ModelGrader(judge.client, settings.rubric_judge_model or judge.endpoint)
        checks.append(judge.check)
        loaders.extend(judge.loaders)
    servicer = RubricServicer(store, Graders(DeterministicGrader(tagger=tagging), model))
    checks.append(once(lambda: publish_builtin_sets(store)))
    return ServiceSpec(
        name="rubric",
        full_name=FULL_NAME,
        register=lambda server: rubric_pb2_grpc.add_RubricServiceServicer_to_server(
            servicer, server
        ),
        checks=tuple(checks),
        loaders=tuple(loaders),
    )
