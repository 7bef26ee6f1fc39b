"""IngestionService adapter. RPCs that later work builds are inherited from the generated base
class, which answers UNIMPLEMENTED."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TypeVar

import grpc

from medxiaohe import __version__
from medxiaohe.common.errors import InvalidInput, PermissionDenied, Unavailable
from medxiaohe.corpus.record import Record
from medxiaohe.storage import ArtifactStore
from medxiaohe.storage.base import check_key
from medxiaohe.storage.uploads import UPLOADS, caller_uploads, put_upload
from medxiaohe_protos.common.v1 import common_pb2
from medxiaohe_protos.common.v1.common_pb2 import RecordError
from medxiaohe_protos.ingestion.v1 import ingestion_pb2 as pb
from medxiaohe_protos.ingestion.v1 import ingestion_pb2_grpc as pb_grpc
from medxiaohe_services.ingestion import convert
from medxiaohe_services.ingestion.corpus import DUPLICATE, CorpusWriter, content_key
from medxiaohe_services.runtime.interceptors import caller_identity
from medxiaohe_services.runtime.resources import TaggerLoader
from medxiaohe_services.runtime.threads import in_thread

PARSE_THREADS = 2
PARSE_QUEUE = 16
MAX_CHUNK = 4 << 20
MAX_DEPTH = 4
MAX_NODES = 10_000
Reply = TypeVar("Reply", pb.IngestDocumentsResponse, pb.IngestStudiesResponse)
Message = TypeVar("Message", pb.Document, pb.Study)
Parsed = TypeVar("Parsed", list[Record], Record)


# Lets a caller download keys outside its own uploads (shards, coverage, other callers' uploads):
# name it in the caller's allow list beside the RPCs ("*" does not include it).
DOWNLOAD_ANY = "DownloadAnyArtifact"


class SpoolBudget:
    """Bytes that uploads in flight spool to disk, all streams together: past the budget an
    upload is refused (UNAVAILABLE, to retry) instead of filling the pod's /tmp."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0  # streams run on one event loop: no lock needed

    @contextlib.contextmanager
    def reserve(self) -> Iterator[Callable[[int], None]]:
        taken = 0

        def take(size: int) -> None:
            nonlocal taken
            if self.used + size > self.limit:
                raise Unavailable(
                    f"uploads in flight fill this replica's spool ({self.limit >> 20} MiB); "
                    "retry shortly"
                )
            self.used += size
            taken += size

        try:
            yield take
        finally:
            self.used -= taken


class IngestionServicer(pb_grpc.IngestionServiceServicer):
    def __init__(
        self,
        store: ArtifactStore,
        tagging: TaggerLoader,
        corpus: CorpusWriter,
        allow: Mapping[str, Sequence[str]],
        spool_bytes: int,
    ) -> None:
        self.store = store
        self.tagging = tagging
        self.corpus = corpus
        self.allow = allow
        self.spool = SpoolBudget(spool_bytes)
        # payloads are parsed here, never on the event loop (a 40-megapixel PNG takes a
        # second): at most PARSE_THREADS at once, at most PARSE_QUEUE waiting for a thread
        self._parsers = ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="ingest-parse")
        self._queue = asyncio.Semaphore(PARSE_THREADS + PARSE_QUEUE)

    async def _parse(self, parse: Callable[[Message], Parsed], message: Message) -> Parsed:
        """``parse(message)`` in the parser pool; the call waits (off the loop) for a place."""
        async with self._queue:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._parsers, parse, message)

    async def IngestDocuments(
        self,
        request_iterator: AsyncIterator[pb.IngestDocumentsRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.IngestDocumentsResponse:
        records, rejected, keys = [], [], []
        async for message in request_iterator:
            document = message.document
            keys.append(content_key(document.document_id, document.content))
            try:
                records.extend(await self._parse(convert.document_records, document))
            except InvalidInput as exc:
                rejected.append(RecordError(record_id=document.document_id, reason=str(exc)))
        if not keys:
            raise InvalidInput("the stream carried no documents")
        return await self._write(keys, records, rejected, pb.IngestDocumentsResponse)

    async def IngestStudies(
        self,
        request_iterator: AsyncIterator[pb.IngestStudiesRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.IngestStudiesResponse:
        records, rejected, keys = [], [], []
        async for message in request_iterator:
            study = message.study
            keys.append(content_key(study.study_id, study.SerializeToString(deterministic=True)))
            try:
                records.append(await self._parse(convert.study_record, study))
            except InvalidInput as exc:
                rejected.append(RecordError(record_id=study.study_id, reason=str(exc)))
        if not keys:
            raise InvalidInput("the stream carried no studies")
        return await self._write(keys, records, rejected, pb.IngestStudiesResponse)

    async def _write(
        self,
        keys: list[str],
        records: list[Record],
        rejected: list[RecordError],
        response: type[Reply],
    ) -> Reply:
        self.tagging.check()  # NotReady before doing any work
        # what the caller named its records, by their pseudonyms: replies use the caller's ids
        sent = {self.corpus.record_pseudonym(r.id): r.id for r in records}
        result, uri = await asyncio.to_thread(self.corpus.write, keys, records)
        if result.skipped:  # the same call again: everything in it is stored already
            return response(duplicates=len(keys), shard_uris=[uri])
        duplicates = sum(reason.startswith(DUPLICATE) for _, reason in result.drops)
        rejected += [
            RecordError(record_id=sent.get(i, i), reason=r)
            for i, r in result.drops
            if not r.startswith(DUPLICATE)
        ]
        return response(
            accepted=result.kept,
            duplicates=duplicates,
            rejected=rejected,
            shard_uris=[uri] if result.kept or result.dropped else [],
        )

    async def GetCoverage(
        self, request: pb.GetCoverageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCoverageResponse:
        if not 0 <= request.depth <= MAX_DEPTH:
            raise InvalidInput(f"depth must be between 0 and {MAX_DEPTH}")
        tree = self.tagging.tagger.tree
        if request.node_id:
            tree.node(request.node_id)  # NotFound for an unknown node
        coverage = await asyncio.to_thread(self.corpus.coverage, request.source)
        nodes = coverage.subtree(request.node_id, request.depth)[:MAX_NODES]
        return pb.GetCoverageResponse(
            nodes=[convert.node_coverage(n) for n in nodes], provenance=self._provenance()
        )

    async def GetGapReport(
        self, request: pb.GetGapReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetGapReportResponse:
        if request.min_mentions < 0 or not 0 <= request.max_gaps <= MAX_NODES:
            raise InvalidInput(f"min_mentions must be >= 0 and max_gaps between 0 and {MAX_NODES}")
        known = set(self.tagging.tagger.tree.columns["type"])
        if request.entity_type and request.entity_type not in known:
            raise InvalidInput(
                f"unknown entity type {request.entity_type!r}; known: {sorted(known)}"
            )
        coverage = await asyncio.to_thread(self.corpus.coverage)
        gaps = coverage.gaps(
            request.min_mentions or 1,
            request.max_gaps or 100,
            request.rare_only,
            request.entity_type,
        )
        return pb.GetGapReportResponse(
            gaps=[
                pb.CoverageGap(node=convert.node_coverage(n), path=path, reason=reason)
                for n, path, reason in gaps
            ],
            provenance=self._provenance(),
        )

    def _provenance(self) -> common_pb2.Provenance:
        return common_pb2.Provenance(
            code_version=__version__, entity_tree_version=self.tagging.tagger.tree.version
        )

    async def TagEntities(
        self, request: pb.TagEntitiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.TagEntitiesResponse:
        text = convert.text_to_tag(request.text)
        tagger = self.tagging.tagger
        known = tagger.types
        unknown = sorted(set(request.entity_types) - known)
        if unknown:
            raise InvalidInput(f"unknown entity types {unknown}; known: {sorted(known)}")
        mentions = await in_thread(tagger.tag, text, request.entity_types or None)
        return pb.TagEntitiesResponse(
            mentions=[convert.mention_to_proto(m) for m in mentions],
            provenance=self._provenance(),
        )

    async def UploadArtifact(
        self,
        request_iterator: AsyncIterator[pb.UploadArtifactRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadArtifactResponse:
        """Stored under the caller's own prefix, named by the keyed pseudonym of its key (the
        caller's file name never reaches the store); the stream's size is capped by the runtime."""
        key = expected = ""
        with (
            self.spool.reserve() as take,
            tempfile.NamedTemporaryFile(prefix="medxiaohe-upload-") as spool,
        ):
            async for message in request_iterator:
                take(len(message.chunk))
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
            stored = self._upload_key(caller_identity(context), key)
            info = await asyncio.to_thread(
                put_upload, self.store, stored, Path(spool.name), expected_sha256=expected or None
            )
        return pb.UploadArtifactResponse(key=info.key, size=info.size, sha256=info.sha256)

    def _upload_key(self, caller: str, key: str) -> str:
        suffix = PurePosixPath(check_key(key)).suffix.lower()
        name = self.corpus.pseudonym(f"upload:{key}")
        own = caller_uploads(caller)[len(UPLOADS) :]
        return f"{own}{name}{suffix if suffix[1:].isalnum() and len(suffix) <= 8 else ''}"

    async def DownloadArtifact(
        self, request: pb.DownloadArtifactRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadArtifactResponse]:
        if not 0 <= request.chunk_size <= MAX_CHUNK:
            raise InvalidInput(f"chunk_size must be between 0 and {MAX_CHUNK}")
        caller = caller_identity(context)
        key = check_key(request.key)
        if not key.startswith(caller_uploads(caller)) and DOWNLOAD_ANY not in self.allow.get(
            caller, ()
        ):
            raise PermissionDenied(
                f"caller {caller!r} may download only its own uploads; other keys need "
                f"{DOWNLOAD_ANY} in its allow list"
            )
        size = (await asyncio.to_thread(self.store.stat, key)).size
        chunks = await asyncio.to_thread(
            self.store.iter_chunks, key, request.chunk_size or (1 << 20)
        )
        first = True
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield pb.DownloadArtifactResponse(chunk=chunk, size=size if first else 0)
            first = False
        if first:  # an empty object still answers once, with its size
            yield pb.DownloadArtifactResponse(size=0)
