"""Protobuf <-> domain objects for the evidence service."""

from __future__ import annotations

from medxiaohe.common.errors import InvalidInput
from medxiaohe.evidence.index import Hit, Mode
from medxiaohe.evidence.passages import Passage, chunk
from medxiaohe_protos.common.v1 import common_pb2
from medxiaohe_protos.evidence.v1 import evidence_pb2 as pb

MODES = {
    pb.RETRIEVAL_MODE_UNSPECIFIED: Mode.HYBRID,
    pb.RETRIEVAL_MODE_HYBRID: Mode.HYBRID,
    pb.RETRIEVAL_MODE_LEXICAL: Mode.LEXICAL,
    pb.RETRIEVAL_MODE_DENSE: Mode.DENSE,
}


def mode(value: int) -> Mode:
    if value not in MODES:
        raise InvalidInput(f"unknown retrieval mode {value}")
    return MODES[value]  # type: ignore[index]


MAX_OFFSET = 2**31 - 1  # Span's fields are int32


def passage_to_proto(p: Passage) -> pb.Passage:
    return pb.Passage(
        passage_id=p.passage_id,
        document_id=p.document_id,
        source=p.source,
        title=p.title,
        text=p.text,
        span=common_pb2.Span(start=p.start, end=p.end),
        licence=p.licence,
        entity_ids=p.entity_ids,
        metadata=p.metadata,
    )


def hit_to_proto(hit: Hit) -> pb.ScoredPassage:
    return pb.ScoredPassage(
        passage=passage_to_proto(hit.passage),
        rank=hit.rank,
        score=hit.score,
        lexical_score=hit.lexical_score,
        dense_score=hit.dense_score,
    )


def passages_of(message: pb.IndexPassagesRequest) -> list[Passage]:
    """The passages one streamed message carries (a document is chunked here)."""
    if message.HasField("passage"):
        p = message.passage
        if not p.passage_id or not p.text.strip():
            raise InvalidInput("a passage needs passage_id and text")
        end = p.span.end if p.span.end else p.span.start + len(p.text)
        if not 0 <= p.span.start <= end <= MAX_OFFSET:  # stored, then sent back as int32
            raise InvalidInput(f"a passage's span must satisfy 0 <= start <= end <= {MAX_OFFSET}")
        return [
            Passage(
                p.passage_id,
                p.document_id or p.passage_id,
                p.text,
                p.span.start,
                end,
                p.source,
                p.title,
                p.licence,
                list(p.entity_ids),
                dict(p.metadata),
            )
        ]
    if message.HasField("document"):
        d = message.document
        if not d.document_id or not d.text.strip():
            raise InvalidInput("a document needs document_id and text")
        return chunk(
            d.document_id,
            d.text,
            source=d.source,
            title=d.title,
            licence=d.licence,
            metadata=dict(d.metadata),
        )
    raise InvalidInput("each message needs a passage or a document")
