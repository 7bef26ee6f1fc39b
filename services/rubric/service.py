"""Wiring of the rubric service into the runtime.

Its RPCs are not built yet: the generated base servicer answers UNIMPLEMENTED for each of
them, and health reflects only what the service already depends on (the object store).
"""

from __future__ import annotations

from medxiaohe.common.settings import Settings
from medxiaohe.storage import ArtifactStore
from medxiaohe_protos.rubric.v1 import rubric_pb2, rubric_pb2_grpc
from medxiaohe_services.runtime.server import ServiceSpec

FULL_NAME = rubric_pb2.DESCRIPTOR.services_by_name["RubricService"].full_name


def build(settings: Settings, store: ArtifactStore) -> ServiceSpec:
    servicer = rubric_pb2_grpc.RubricServiceServicer()  # type: ignore[abstract]  # base: UNIMPLEMENTED
    return ServiceSpec(
        name="rubric",
        full_name=FULL_NAME,
        register=lambda server: rubric_pb2_grpc.add_RubricServiceServicer_to_server(
            servicer, server
        ),
        checks=(store.ping,),
    )
