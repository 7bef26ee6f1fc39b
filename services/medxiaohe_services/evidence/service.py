"""Wiring of the evidence service into the runtime."""

from __future__ import annotations

from medxiaohe.evidence.retrievers import QueryBatcher
from medxiaohe_protos.evidence.v1 import evidence_pb2, evidence_pb2_grpc
from medxiaohe_services.evidence.servicer import EvidenceServicer
from medxiaohe_services.runtime.resources import Resources
from medxiaohe_services.runtime.server import ServiceSpec

FULL_NAME = evidence_pb2.DESCRIPTOR.services_by_name["EvidenceService"].full_name


def build(resources: Resources) -> ServiceSpec:
    """NOT_SERVING until the query encoder is in. The MET is optional here: without one,
    indexed passages carry no entity ids."""
    store, encoder, tagging = resources.store, resources.encoder, resources.tagging
    settings = resources.settings
    queries = QueryBatcher(
        threads=settings.evidence_encoder_threads, bf16=settings.evidence_query_bf16
    )
    servicer = EvidenceServicer(store, resources.indexes, tagging, settings.evidence, queries)
    return ServiceSpec(
        name="evidence",
        full_name=FULL_NAME,
        register=lambda server: evidence_pb2_grpc.add_EvidenceServiceServicer_to_server(
            servicer, server
        ),
        checks=(store.ping, encoder.check),
        loaders=(encoder, tagging, resources.indexes),
    )
