"""Structured output: OpenAI's ``response_format`` as constrained decoding (outlines-core).

A JSON schema becomes a regular language over the model's vocabulary; a logits processor masks
every token that would leave it, so what the model writes parses and validates even with random
weights. Integers with a small minimum..maximum range are enforced exactly (as an enum); other
numbers are bounded to 16 digits (their bounds are not enforced); strings only by the schema:
give them ``maxLength`` when a ``max_tokens`` budget must hold the whole object (otherwise the
budget can end it first, ``finish_reason: "length"``, as with OpenAI's API).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.models.grammar import GrammarCompiler

MAX_SCHEMA_BYTES = 32 << 10
WHITESPACE = r"[ ]?"  # at most one space between JSON tokens: no runaway whitespace
# outlines-core writes numbers with unbounded digit runs (and ignores minimum/maximum), so a
# model could write digits forever: every run is bounded, which no practical value exceeds.
_DIGIT_RUNS = (
    ("[1-9][0-9]*", "[1-9][0-9]{0,15}"),
    ("\\.[0-9]+", "\\.[0-9]{1,16}"),
    ("[eE][+-][0-9]+", "[eE][+-][0-9]{1,3}"),
)


MAX_ENUM_RANGE = 65_536


def enforceable(schema: Any) -> Any:
    """The schema with bounded integers (minimum and maximum, a range of at most
    ``MAX_ENUM_RANGE``) written as enums, which the regular expression can enforce (outlines-core
    ignores numeric bounds)."""
    if isinstance(schema, list):
        return [enforceable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: enforceable(value) for key, value in schema.items()}
    if out.get("type") == "integer":
        low = out.get("minimum")
        high = out.get("maximum")
        if isinstance(out.get("exclusiveMinimum"), int):
            low = out["exclusiveMinimum"] + 1
        if isinstance(out.get("exclusiveMaximum"), int):
            high = out["exclusiveMaximum"] - 1
        if isinstance(low, int) and isinstance(high, int) and 0 <= high - low < MAX_ENUM_RANGE:
            return {"enum": list(range(low, high + 1))}
    return out


def bounded(regex: str) -> str:
    """The schema's regular expression with number literals of at most 16 digits."""
    for unbounded, limited in _DIGIT_RUNS:
        regex = regex.replace(unbounded, limited)
    return regex


ANY_OBJECT = {"type": "object"}


def schema_of(response_format: Any) -> str | None:
    """The compact JSON schema text of a ``response_format`` (None for plain text). Keys keep
    their order: properties are generated in the order the schema lists them, as OpenAI's
    structured outputs do (a "reasoning" listed before an "answer" is written first)."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise InvalidInput("response_format must be an object")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return json.dumps(ANY_OBJECT)
    if kind != "json_schema":
        raise InvalidInput("response_format.type must be text, json_object or json_schema")
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise InvalidInput("response_format.json_schema.schema must be a JSON schema object")
    text = json.dumps(schema, separators=(",", ":"))
    if len(text) > MAX_SCHEMA_BYTES:
        raise InvalidInput(f"response_format's schema may be at most {MAX_SCHEMA_BYTES} bytes")
    return text


_COMPILERS: dict[str, GrammarCompiler] = {}
_COMPILERS_LOCK = threading.Lock()


def compiler_for(vocabulary: Any) -> GrammarCompiler:
    """One bounded compiler (one worker process) per vocabulary in this process."""
    key = hashlib.sha256(bytes(vocabulary.__reduce__()[1][0])).hexdigest()
    with _COMPILERS_LOCK:
        if key not in _COMPILERS:
            _COMPILERS[key] = GrammarCompiler(vocabulary)
        return _COMPILERS[key]


class Constraints:
    """Compiles schemas for one model's vocabulary, each once (a small LRU), and hands out a
    fresh logits processor per generation (processors keep per-sequence state)."""

    def __init__(self, model: Any, tokenizer: Any, cache_size: int = 64) -> None:
        import outlines
        from outlines.backends.outlines_core import OutlinesCoreBackend

        self._backend = OutlinesCoreBackend(outlines.from_transformers(model, tokenizer))
        self._compiler = compiler_for(self._backend.vocabulary)
        self._indexes: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_size = cache_size

    def processor(self, schema: str) -> Any:
        from outlines.backends.outlines_core import OutlinesCoreLogitsProcessor

        return OutlinesCoreLogitsProcessor(self._index(schema), "torch")

    def _index(self, schema: str) -> Any:
        from outlines_core.json_schema import build_regex_from_schema

        with self._lock:
            if schema in self._indexes:
                self._indexes.move_to_end(schema)
                return self._indexes[schema]
        try:
            rewritten = json.dumps(enforceable(json.loads(schema)))
            regex = bounded(build_regex_from_schema(rewritten, WHITESPACE))
        except (ValueError, TypeError, RuntimeError) as exc:
            raise InvalidInput(f"response_format's schema cannot be used: {exc}") from None
        index = self._compiler.compile(regex)  # bounded in time and size
        with self._lock:
            self._indexes[schema] = index
            while len(self._indexes) > self._cache_size:
                self._indexes.popitem(last=False)
        return index
