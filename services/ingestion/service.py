"""Wiring of the ingestion service into the runtime."""

from __future__ import annotations

from medxiaohe.common.secrets import required_secret
from medxiaohe.common.settings import Settings
from medxiaohe.entities.loader import TaggerLoader
from medxiaohe.entities.ner import NerTagger
from medxiaohe.models.folders import model_folder
from medxiaohe.storage import ArtifactStore
from medxiaohe_protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from medxiaohe_services.ingestion.corpus import CorpusWriter
from medxiaohe_services.ingestion.servicer import IngestionServicer
from medxiaohe_services.runtime.server import ServiceSpec

FULL_NAME = ingestion_pb2.DESCRIPTOR.services_by_name["IngestionService"].full_name


def build(settings: Settings, store: ArtifactStore) -> ServiceSpec:
    uri = settings.ner_model_uri
    tagging = TaggerLoader(
        store,
        settings.met_version or None,
        build_if_missing=settings.met_build_if_missing,
        ner=(lambda: NerTagger(model_folder(uri, settings))) if uri else None,
    )
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
    )
