"""Protobuf <-> domain objects for the ingestion service."""

from __future__ import annotations

from medxiaohe.common.errors import InvalidInput
from medxiaohe.corpus.coverage import NodeCoverage
from medxiaohe.corpus.ingest import read_payload
from medxiaohe.corpus.record import Record
from medxiaohe.entities.context import Assertion
from medxiaohe.entities.tagger import Mention
from medxiaohe_protos.common.v1 import common_pb2 as common
from medxiaohe_protos.ingestion.v1 import ingestion_pb2

MAX_TEXT_CHARS = 1_000_000
ASSERTIONS = {
    Assertion.PRESENT: common.ASSERTION_PRESENT,
    Assertion.NEGATED: common.ASSERTION_NEGATED,
    Assertion.UNCERTAIN: common.ASSERTION_UNCERTAIN,
    Assertion.HISTORICAL: common.ASSERTION_HISTORICAL,
    Assertion.FAMILY: common.ASSERTION_FAMILY,
}


def text_to_tag(text: str) -> str:
    if not text.strip():
        raise InvalidInput("text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInput(f"text is longer than {MAX_TEXT_CHARS} characters; split it")
    return text


def mention_to_proto(mention: Mention) -> common.EntityMention:
    return common.EntityMention(
        span=common.Span(start=mention.start, end=mention.end),
        text=mention.text,
        node_id=mention.node_id,
        path=list(mention.path),
        entity_type=mention.entity_type,
        assertion=ASSERTIONS[mention.assertion],
        confidence=mention.confidence,
        tagger=mention.tagger,
    )


DOCUMENT_KINDS = {
    ingestion_pb2.DOCUMENT_FORMAT_TEXT: "text",
    ingestion_pb2.DOCUMENT_FORMAT_FHIR_JSON: "fhir",
    ingestion_pb2.DOCUMENT_FORMAT_HL7V2: "hl7",
}
STUDY_KINDS = {
    ingestion_pb2.STUDY_FILE_FORMAT_DICOM: "dicom",
    ingestion_pb2.STUDY_FILE_FORMAT_PNG: "image",
    ingestion_pb2.STUDY_FILE_FORMAT_JPEG: "image",
}


def _stamp(
    records: list[Record],
    record_id: str,
    source: str,
    patient_key: str,
    licence: str,
    metadata: dict[str, str],
) -> list[Record]:
    """Caller fields onto the records; ids and values stay as sent until the pipeline's
    de-identification step pseudonymizes and cleans them (metadata is allow-listed there)."""
    for i, record in enumerate(records):
        record.id = record_id if len(records) == 1 else f"{record_id}/{record.id or i}"
        record.source = source or record.source
        record.patient_key = patient_key or record.patient_key
        record.licence = licence
        record.metadata = {**record.metadata, **metadata}
    return records


def document_records(document: ingestion_pb2.Document) -> list[Record]:
    """Records of one streamed document; InvalidInput says what is wrong with it."""
    if not document.document_id:
        raise InvalidInput("document_id is required")
    kind = DOCUMENT_KINDS.get(document.format)
    if kind is None:
        raise InvalidInput("format must be TEXT, FHIR_JSON or HL7V2")
    if not document.content:
        raise InvalidInput("content is empty")
    records = read_payload(kind, document.content, document.document_id)
    return _stamp(
        records,
        document.document_id,
        document.source,
        document.patient_key,
        document.licence,
        dict(document.metadata),
    )


def study_record(study: ingestion_pb2.Study) -> Record:
    """One record per study: its text, the rendered images, de-identified DICOM metadata."""
    if not study.study_id:
        raise InvalidInput("study_id is required")
    if not study.files:
        raise InvalidInput("a study needs at least one file")
    texts, attachments, metadata = [study.text] if study.text else [], {}, {}
    known: list[str] = []
    quarantine = ""
    for number, file in enumerate(study.files):
        kind = STUDY_KINDS.get(file.format)
        if kind is None:
            raise InvalidInput(f"file {number}: format must be DICOM, PNG or JPEG")
        try:
            (record,) = read_payload(kind, file.content, f"{study.study_id}/{number}")
        except InvalidInput as exc:
            raise InvalidInput(f"file {number}: {exc}") from None
        if record.text:
            texts.append(record.text)
        metadata.update(record.metadata)
        known += record.known_phi  # a DICOM header's names are removed from the study's text
        quarantine = quarantine or (record.quarantine and f"file {number}: {record.quarantine}")
        for name, data in record.attachments.items():
            attachments[f"{number}-{name}"] = data
    record = Record(
        id=study.study_id,
        source="",
        text="\n".join(texts),
        kind="study",
        attachments=attachments,
        known_phi=known,
        quarantine=quarantine,
    )
    return _stamp(
        [record],
        study.study_id,
        study.source,
        study.patient_key,
        study.licence,
        {**metadata, **study.metadata},
    )[0]


def node_coverage(node: NodeCoverage) -> ingestion_pb2.NodeCoverage:
    return ingestion_pb2.NodeCoverage(
        node_id=node.node_id,
        name=node.name,
        level=node.level,
        mentions=node.mentions,
        rolled_up_mentions=node.rolled_up_mentions,
        documents=node.documents,
        rare=node.rare,
    )
