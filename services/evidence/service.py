"""Wiring of the evidence service into the runtime.

Its RPCs are not built yet: the generated base servicer answers UNIMPLEMENTED for each of
them, and health reflects only what the service already depends on (the object store).
"""

from __future__ import annotations

from medxiaohe.common.settings import Settings
from medxiaohe.storage import ArtifactStore
from medxiaohe_protos.evidence.v1 import evidence_pb2, evidence_pb2_grpc
from medxiaohe_services.runtime.server import ServiceSpec

FULL_NAME = evidence_pb2.DESCRIPTOR.services_by_name["EvidenceService"].full_name


def build(settings: Settings, store: ArtifactStore) -> ServiceSpec:
    servicer = evidence_pb2_grpc.EvidenceServiceServicer()  # type: ignore[abstract]  # base: UNIMPLEMENTED
    return ServiceSpec(
        name="evidence",
        full_name=FULL_NAME,
        register=lambda server: evidence_pb2_grpc.add_EvidenceServiceServicer_to_server(
            servicer, server
        ),
        checks=(store.ping,),
    )
