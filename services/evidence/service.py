"""Wiring of the evidence service into the runtime."""

from __future__ import annotations

import threading

from medxiaohe.common.errors import NotReady
from medxiaohe.common.settings import Settings
from medxiaohe.entities.loader import TaggerLoader
from medxiaohe.evidence.registry import IndexRegistry
from medxiaohe.evidence.retrievers import encoder
from medxiaohe.storage import ArtifactStore
from medxiaohe_protos.evidence.v1 import evidence_pb2, evidence_pb2_grpc
from medxiaohe_services.evidence.servicer import EvidenceServicer
from medxiaohe_services.runtime.server import ServiceSpec

FULL_NAME = evidence_pb2.DESCRIPTOR.services_by_name["EvidenceService"].full_name


class EncoderLoader:
    """Loads the query encoder in the background; NOT_SERVING until it is in."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        threading.Thread(target=self._load, name="encoder-loader", daemon=True).start()

    def _load(self) -> None:
        encoder()
        self.ready.set()

    def check(self) -> None:
        if not self.ready.is_set():
            raise NotReady("the query encoder is loading")


def build(settings: Settings, store: ArtifactStore) -> ServiceSpec:
    loader = EncoderLoader()
    # the MET is optional here: without one, indexed passages carry no entity ids
    tagging = TaggerLoader(store, settings.met_version or None, retry_s=60.0)
    servicer = EvidenceServicer(store, IndexRegistry(store), tagging, settings.evidence)
    return ServiceSpec(
        name="evidence",
        full_name=FULL_NAME,
        register=lambda server: evidence_pb2_grpc.add_EvidenceServiceServicer_to_server(
            servicer, server
        ),
        checks=(store.ping, loader.check),
    )
