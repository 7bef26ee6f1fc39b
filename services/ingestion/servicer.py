"""IngestionService adapter. RPCs that later work builds are inherited from the generated base
class, which answers UNIMPLEMENTED."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from medxiaohe import __version__
from medxiaohe.common.errors import InvalidInput
from medxiaohe.entities.loader import TaggerLoader
from medxiaohe.storage import ArtifactStore
from medxiaohe.storage.uploads import put_upload
from medxiaohe_protos.common.v1 import common_pb2
from medxiaohe_protos.ingestion.v1 import ingestion_pb2 as pb
from medxiaohe_protos.ingestion.v1 import ingestion_pb2_grpc as pb_grpc
from medxiaohe_services.ingestion import convert

SPOOL_IN_MEMORY = 8 << 20  # uploads larger than this are spooled to disk before storing
MAX_CHUNK = 4 << 20


class IngestionServicer(pb_grpc.IngestionServiceServicer):
    def __init__(self, store: ArtifactStore, tagging: TaggerLoader) -> None:
        self.store = store
        self.tagging = tagging

    async def TagEntities(
        self, request: pb.TagEntitiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.TagEntitiesResponse:
        text = convert.text_to_tag(request.text)
        tagger = self.tagging.tagger
        known = set(tagger.tree.columns["type"])
        unknown = sorted(set(request.entity_types) - known)
        if unknown:
            raise InvalidInput(f"unknown entity types {unknown}; known: {sorted(known)}")
        mentions = await asyncio.to_thread(tagger.tag, text, request.entity_types or None)
        return pb.TagEntitiesResponse(
            mentions=[convert.mention_to_proto(m) for m in mentions],
            provenance=common_pb2.Provenance(
                code_version=__version__, entity_tree_version=tagger.tree.version
            ),
        )

    async def UploadArtifact(
        self,
        request_iterator: AsyncIterator[pb.UploadArtifactRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadArtifactResponse:
        key = expected = ""
        with tempfile.NamedTemporaryFile(prefix="medxiaohe-upload-") as spool:
            async for message in request_iterator:
                if not key:
                    key, expected = message.key, message.sha256
                    if not key:
                        raise InvalidInput("the first message of an upload must set key")
                elif message.key and message.key != key:
                    raise InvalidInput("key may only be set on the first message of an upload")
                spool.write(message.chunk)
            if not key:
                raise InvalidInput("empty upload stream")
            spool.flush()
            info = await asyncio.to_thread(
                put_upload, self.store, key, Path(spool.name), expected_sha256=expected or None
            )
        return pb.UploadArtifactResponse(key=info.key, size=info.size, sha256=info.sha256)

    async def DownloadArtifact(
        self, request: pb.DownloadArtifactRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadArtifactResponse]:
        if not 0 <= request.chunk_size <= MAX_CHUNK:
            raise InvalidInput(f"chunk_size must be between 0 and {MAX_CHUNK}")
        size = (await asyncio.to_thread(self.store.stat, request.key)).size
        chunks = await asyncio.to_thread(
            self.store.iter_chunks, request.key, request.chunk_size or (1 << 20)
        )
        first = True
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield pb.DownloadArtifactResponse(chunk=chunk, size=size if first else 0)
            first = False
        if first:  # an empty object still answers once, with its size
            yield pb.DownloadArtifactResponse(size=0)
