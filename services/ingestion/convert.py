"""Protobuf <-> domain objects for the ingestion service."""

from __future__ import annotations

from medxiaohe.common.errors import InvalidInput
from medxiaohe.entities.context import Assertion
from medxiaohe.entities.tagger import Mention
from medxiaohe_protos.common.v1 import common_pb2 as common

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
