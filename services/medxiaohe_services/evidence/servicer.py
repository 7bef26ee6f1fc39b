"""EvidenceService adapter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np

from medxiaohe import __version__
from medxiaohe.common.errors import InvalidInput, NotFound, PermissionDenied
from medxiaohe.common.settings import ServiceSettings
from medxiaohe.evidence.index import EvidenceIndex, Mode, check_request
from medxiaohe.evidence.indexing import add_passages
from medxiaohe.evidence.passages import Passage
from medxiaohe.evidence.registry import IndexRegistry
from medxiaohe.evidence.retrievers import QueryBatcher
from medxiaohe.storage import ArtifactStore
from medxiaohe_protos.common.v1 import common_pb2
from medxiaohe_protos.common.v1.common_pb2 import RecordError
from medxiaohe_protos.evidence.v1 import evidence_pb2 as pb
from medxiaohe_protos.evidence.v1 import evidence_pb2_grpc as pb_grpc
from medxiaohe_services.evidence import convert
from medxiaohe_services.runtime.interceptors import caller_identity
from medxiaohe_services.runtime.resources import TaggerLoader
from medxiaohe_services.runtime.threads import in_thread

MAX_PASSAGES_PER_CALL = 100_000


class EvidenceServicer(pb_grpc.EvidenceServiceServicer):
    def __init__(
        self,
        store: ArtifactStore,
        registry: IndexRegistry,
        tagging: TaggerLoader,
        settings: ServiceSettings,
        queries: QueryBatcher | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.tagging = tagging
        self.settings = settings  # which caller may write which index
        self.queries = queries or QueryBatcher()  # queries are encoded in batches

    async def _index(self, name: str, version: str) -> EvidenceIndex:
        if not name:
            raise InvalidInput("index_name is required")
        try:
            return await asyncio.to_thread(self.registry.get, name, version)
        except NotFound:
            raise NotFound(
                f"no evidence index {name!r}" + (f" version {version!r}" if version else "")
            ) from None

    @staticmethod
    def _provenance(index: EvidenceIndex) -> common_pb2.Provenance:
        return common_pb2.Provenance(code_version=__version__, index_version=index.version)

    async def RetrieveEvidence(
        self, request: pb.RetrieveEvidenceRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetrieveEvidenceResponse:
        index = await self._index(request.index_name, request.index_version)
        mode, k = convert.mode(request.mode), request.k or 10
        check_request(request.query, k)
        vector: np.ndarray | None = None
        if mode is not Mode.LEXICAL:
            vector = await asyncio.wrap_future(self.queries.submit(request.query))
        hits = await in_thread(
            index.search,
            request.query,
            k,
            mode,
            list(request.sources),
            list(request.entity_ids),
            vector,
        )
        return pb.RetrieveEvidenceResponse(
            results=[convert.hit_to_proto(h) for h in hits], provenance=self._provenance(index)
        )

    async def GetPassage(
        self, request: pb.GetPassageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPassageResponse:
        index = await self._index(request.index_name, request.index_version)
        passage = index.passage(request.passage_id)
        if passage is None:
            raise NotFound(f"no passage {request.passage_id!r} in {request.index_name!r}")
        return pb.GetPassageResponse(
            passage=convert.passage_to_proto(passage), provenance=self._provenance(index)
        )

    async def IndexPassages(
        self,
        request_iterator: AsyncIterator[pb.IndexPassagesRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.IndexPassagesResponse:
        name = request_id = ""
        expected: str | None = None
        passages: list[Passage] = []
        rejected: list[RecordError] = []
        async for message in request_iterator:
            if not name:
                name, request_id = message.index_name, message.request_id
                if not name:
                    raise InvalidInput("the first message must set index_name")
                caller = caller_identity(context)
                if not self.settings.may_use(caller, name):
                    raise PermissionDenied(
                        f"caller {caller!r} may not write index {name!r}: name it in the "
                        "evidence service's indexes for this caller"
                    )
                if message.HasField("expected_version"):
                    expected = message.expected_version
            try:
                passages.extend(convert.passages_of(message))
            except InvalidInput as exc:
                record = message.passage.passage_id or message.document.document_id
                rejected.append(RecordError(record_id=record, reason=str(exc)))
            if len(passages) > MAX_PASSAGES_PER_CALL:
                raise InvalidInput(f"more than {MAX_PASSAGES_PER_CALL} passages in one call")
        if not name:
            raise InvalidInput("the stream carried no passages")
        tagger = self.tagging.dictionary if self.tagging.ready else None  # entity ids, if a MET
        result = await in_thread(
            add_passages, self.store, name, passages, request_id, tagger, expected
        )
        return pb.IndexPassagesResponse(
            index_name=name,
            index_version=result.version,
            passages_indexed=result.added,
            rejected=rejected,
        )
