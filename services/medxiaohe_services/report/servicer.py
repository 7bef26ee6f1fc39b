"""ReportService adapter: a request to the report pipeline, its trace streamed as it runs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from medxiaohe.common.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from medxiaohe.common.settings import ServiceSettings
from medxiaohe.evidence.registry import IndexRegistry
from medxiaohe.report.fhir import to_fhir
from medxiaohe.report.images import StudyImage
from medxiaohe.report.model import Report
from medxiaohe.report.pipeline import generate
from medxiaohe.report.state import Deps, ReportRequest
from medxiaohe.report.store import (
    ReportKeys,
    find_report,
    load_report,
    load_review,
    report_id,
    report_owner,
    save_report,
)
from medxiaohe.report.style import DEFAULT, load_template
from medxiaohe.report.trace import Step, steps_from_dicts
from medxiaohe.storage import ArtifactStore
from medxiaohe_protos.report.v1 import report_pb2 as pb
from medxiaohe_protos.report.v1 import report_pb2_grpc as pb_grpc
from medxiaohe_services.report import convert
from medxiaohe_services.runtime.interceptors import caller_identity
from medxiaohe_services.runtime.models import ModelEndpoint
from medxiaohe_services.runtime.resources import TaggerLoader
from medxiaohe_services.runtime.tracing import step_span

DEADLINE_MARGIN_S = 5.0  # kept for the conclusions, the verifier and the store after the loop
_DONE = object()
# Lets a caller read reports other callers generated: name it in the caller's allow list beside
# the RPCs ("*" does not include it).
READ_ANY = "ReadAnyReport"


class ReportServicer(pb_grpc.ReportServiceServicer):
    def __init__(
        self,
        store: ArtifactStore,
        model: ModelEndpoint | None,
        tagging: TaggerLoader,
        indexes: IndexRegistry,
        default_index: str,
        key: bytes,
        settings: ServiceSettings,
        max_concurrent: int = 4,
    ) -> None:
        self.store = store
        self.model = model
        self.tagging = tagging
        self.indexes = indexes
        self.default_index = default_index
        self.key = key
        self.keys = ReportKeys(key)
        self.settings = settings  # who may read any report, which indexes callers may name
        # each report holds its decoded images while it runs: a bounded number at once
        self._slots = asyncio.Semaphore(max_concurrent)

    async def GenerateReport(
        self, request: pb.GenerateReportRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateReportResponse]:
        caller = caller_identity(context)
        rid = report_id(self.key, caller, request.request_id)
        digest = hmac.new(
            self.key, request.SerializeToString(deterministic=True), hashlib.sha256
        ).hexdigest()
        stored = await asyncio.to_thread(self._stored, rid, digest)
        if stored is not None:  # a retry: the same report, its trace first
            for step in stored[1]:
                yield pb.GenerateReportResponse(step=convert.step(step))
            yield pb.GenerateReportResponse(report=convert.report(stored[0]))
            return
        async with self._slots:  # waits for a place, within the caller's deadline
            async for reply in self._generate(request, context, caller, rid, digest):
                yield reply

    async def _generate(
        self,
        request: pb.GenerateReportRequest,
        context: grpc.aio.ServicerContext,
        caller: str,
        rid: str,
        digest: str,
    ) -> AsyncIterator[pb.GenerateReportResponse]:
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining - DEADLINE_MARGIN_S
        report_request, deps = await asyncio.to_thread(
            self._prepare, request, caller, digest, deadline
        )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def emit(step: Step) -> None:
            step_span(step)  # under the RPC's span: the report's trace, step by step
            loop.call_soon_threadsafe(queue.put_nowait, step)

        # what the store must not hold in clear: the caller's request, study and image ids
        identifiers = [request.request_id, request.study_id, request.patient_reference]
        identifiers += sorted({image.id for image in report_request.images})

        def run() -> tuple[Any, list[Step]]:
            try:
                report, state = generate(report_request, deps, rid, emit)
                saved = self._save(
                    report, state.trace.steps, digest, caller, identifiers, report_request.images
                )
                return saved, state.trace.steps
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        running = asyncio.ensure_future(asyncio.to_thread(run))
        while (item := await queue.get()) is not _DONE:
            yield pb.GenerateReportResponse(step=convert.step(item))
        report, _ = await running
        yield pb.GenerateReportResponse(report=convert.report(report))

    async def GetReport(
        self, request: pb.GetReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetReportResponse:
        report, trace = await asyncio.to_thread(self._readable, request.report_id, context)
        return pb.GetReportResponse(
            report=convert.report(report),
            trace=[convert.step(s) for s in steps_from_dicts(trace)],
        )

    async def ExportReport(
        self, request: pb.ExportReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportReportResponse:
        report, _ = await asyncio.to_thread(self._readable, request.report_id, context)
        signed = await asyncio.to_thread(load_review, self.store, report.id, self.keys)
        fhir = to_fhir(*signed) if signed else to_fhir(report)  # final once a clinician signed
        return pb.ExportReportResponse(fhir_json=json.dumps(fhir))

    def _readable(
        self, requested: str, context: grpc.aio.ServicerContext
    ) -> tuple[Report, list[dict[str, Any]]]:
        """A stored report with the caller's ids, if the caller generated it or may read any."""
        rid = _id(requested)
        caller = caller_identity(context)
        mine = report_owner(self.store, rid) == self.keys.owner(caller)
        if not mine and READ_ANY not in self.settings.allow.get(caller, ()):
            raise PermissionDenied(
                f"caller {caller!r} may read only the reports it generated; other reports "
                f"need {READ_ANY} in its allow list"
            )
        return load_report(self.store, rid, self.keys)

    def _stored(self, rid: str, digest: str) -> tuple[Any, list[Step]] | None:
        """The stored report of this request id, if any; Conflict when it was made for other
        content."""
        found = find_report(self.store, rid, self.keys)
        if found is None:
            return None
        report, trace = found
        if report.provenance.request_digest != digest:
            raise Conflict("this request_id was used for another request; use a new request_id")
        return report, steps_from_dicts(trace)

    def _save(
        self,
        report: Any,
        trace: list[Step],
        digest: str,
        caller: str,
        identifiers: list[str],
        images: tuple[StudyImage, ...],
    ) -> Any:
        """Store the report; a twin request that finished first wins (its report is returned)."""
        try:
            dicts = [s.as_dict() for s in trace]
            save_report(self.store, report, dicts, self.keys, caller, identifiers, images)
            return report
        except Conflict:
            stored = self._stored(report.id, digest)
            if stored is None:
                raise
            return stored[0]

    def _prepare(
        self, request: pb.GenerateReportRequest, caller: str, digest: str, deadline: float | None
    ) -> tuple[ReportRequest, Deps]:
        """The checked request and what the agents need; errors name what is wrong."""
        report_request = ReportRequest(
            request_id=request.request_id,
            study_id=request.study_id,
            subject=convert.subject(request),
            images=convert.images(request, self.store, caller),
            context=request.clinical_context,
            max_steps=convert.max_steps(request),
            policy=convert.policy(request),
            digest=digest,
        )
        if request.language not in ("", "en"):
            raise InvalidInput("language: only 'en' templates ship so far")
        template = load_template(self.store, request.template_id or DEFAULT)
        index_name = request.evidence_index or self.default_index
        if index_name != self.default_index and not self.settings.may_use(caller, index_name):
            raise PermissionDenied(
                f"caller {caller!r} may ground reports only in the default index"
                + (f" ({self.default_index!r})" if self.default_index else "")
                + " and the indexes the report service's settings name for it"
            )
        index = None
        if index_name:
            try:
                index = self.indexes.get(index_name)
            except NotFound:
                raise NotFound(f"no evidence index {index_name!r}") from None
        if self.model is None:
            raise NotFound("no model is configured for reports")
        tagger = self.tagging.dictionary  # mentions linked to tree nodes, at dictionary speed
        return report_request, Deps(
            model=self.model.client,
            model_endpoint=self.model.endpoint,
            model_version=self.model.version(),
            tree=tagger.tree,
            tagger=tagger,
            template=template,
            index=index,
            index_name=index_name if index else "",
            deadline=deadline,
        )


def _id(report_id: str) -> str:
    if not report_id.startswith("r-") or not report_id[2:].isalnum() or len(report_id) > 40:
        raise InvalidInput("report_id is the id GenerateReport returned (r-...)")
    return report_id
