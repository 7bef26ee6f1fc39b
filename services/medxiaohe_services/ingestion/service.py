"""Wiring of the ingestion service into the runtime."""

from __future__ import annotations

from medxiaohe.common.secrets import required_secret
from medxiaohe_protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from medxiaohe_services.ingestion.corpus import CorpusWriter
from medxiaohe_services.ingestion.servicer import IngestionServicer
from medxiaohe_services.runtime.resources import Resources
from medxiaohe_services.runtime.server import ServiceSpec

FULL_NAME = ingestion_pb2.DESCRIPTOR.services_by_name["IngestionService"].full_name


def build(resources: Resources) -> ServiceSpec:
    """The tagger is hybrid when MEDXIAOHE_NER_MODEL_URI names a model; embedded mode builds
    the tree when none is published (MEDXIAOHE_MET_BUILD_IF_MISSING)."""
    settings, store, tagging = resources.settings, resources.store, resources.tagging
    corpus = CorpusWriter(store, settings.ingest_dataset, required_secret(settings), tagging)
    servicer = IngestionServicer(
        store, tagging, corpus, settings.ingestion.allow, settings.upload_spool_mb << 20
    )
    return ServiceSpec(
        name="ingestion",
        full_name=FULL_NAME,
        register=lambda server: ingestion_pb2_grpc.add_IngestionServiceServicer_to_server(
            servicer, server
        ),
        checks=(store.ping, tagging.check),
        loaders=(tagging,),
    )
