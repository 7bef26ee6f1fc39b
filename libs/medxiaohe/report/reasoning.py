"""The reasoning agent: a loop of OpenAI tool calls, bounded by ``max_steps`` and the caller's
deadline, then conclusions that cite evidence exactly.

Tools: ``search_evidence`` (the evidence index), ``lookup_entity`` (the Medical Entity Tree),
``zoom`` and ``rotate`` (a new view of an image, sent back to the model, its pixels mapped back
to the original's). Every call and its result are trace steps paired by the call's id; a tool
that refuses its arguments answers with an error the model sees, and the loop goes on."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe.evidence.passages import Passage
from medxiaohe.models.chat import ChatParams
from medxiaohe.models.client import with_images
from medxiaohe.models.tools import ToolCall
from medxiaohe.report import images
from medxiaohe.report.model import Citation, Region
from medxiaohe.report.style import Conclusion

if TYPE_CHECKING:
    from medxiaohe.report.state import ReportState

MAX_VIEWS = 4
MAX_CONCLUSIONS = 3
PASSAGE_CHARS = 200  # of each passage shown to the model
PROMPT = (
    "You are the reasoning agent of a radiology reporting pipeline. You have the perception "
    "agent's findings. Use the tools to check them: search the evidence, look up entities, zoom "
    "into or rotate an image. When you know enough, answer without a tool call."
)
CONCLUDE = (
    "Write the impression: at most three conclusions, each resting on findings (their ids) and "
    "citing the passages (their ids) that support it."
)
_SENTENCE = re.compile(r"[^.!?;\n]+[.!?;]?")


def _function(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": sorted(properties),
                "additionalProperties": False,
            },
        },
    }


def tool_specs(state: ReportState) -> list[dict[str, Any]]:
    """The tools, with the ids that exist now (images, views, sources) as enums."""
    specs = [
        _function(
            "lookup_entity",
            "A Medical Entity Tree node by id or by name: its parents, synonyms, rare flag.",
            {"query": {"type": "string", "minLength": 1, "maxLength": 80}},
        )
    ]
    index = state.deps.index
    if index is not None:
        search: dict[str, Any] = {
            "query": {"type": "string", "minLength": 1, "maxLength": 120},
            "k": {"type": "integer", "minimum": 1, "maximum": 5},
        }
        if state.sources:
            search["sources"] = {"type": "array", "items": {"enum": state.sources}, "maxItems": 2}
        specs.insert(0, _function("search_evidence", "Passages of evidence.", search))
    seen = [*state.images, *state.views]
    if seen:
        box = {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4}
        specs.append(
            _function(
                "zoom",
                "A view of the box [x0, y0, x1, y1] (pixels) of an image or view.",
                {"image_id": {"enum": seen}, "box": box},
            )
        )
        specs.append(
            _function(
                "rotate",
                "An image or view rotated counter-clockwise.",
                {"image_id": {"enum": seen}, "degrees": {"enum": list(images.ROTATIONS)}},
            )
        )
    return specs


def search_evidence(state: ReportState, args: dict[str, Any]) -> dict[str, Any]:
    index = state.deps.index
    if index is None:
        raise InvalidInput("no evidence index is configured for this report")
    hits = index.search(args["query"], int(args["k"]), sources=args.get("sources") or ())
    for hit in hits:
        state.retrieved[hit.passage.passage_id] = hit.passage
    return {
        "passages": [
            {
                "passage_id": h.passage.passage_id,
                "source": h.passage.source,
                "text": h.passage.text[:PASSAGE_CHARS],
            }
            for h in hits
        ]
    }


def lookup_entity(state: ReportState, args: dict[str, Any]) -> dict[str, Any]:
    tree, query = state.deps.tree, str(args["query"]).strip()
    node_id = query if query in tree.index else ""
    if not node_id:
        mentions = [m for m in state.deps.tagger.tag(query, assertions=False) if m.node_id]
        if not mentions:
            raise NotFound("no entity matches the query")
        node_id = mentions[0].node_id
    node = tree.node(node_id)
    return {
        "id": node.id,
        "name": node.name,
        "type": node.type,
        "rare": node.rare,
        "parents": [{"id": p, "name": tree.node(p).name} for p in node.parent_ids],
        "synonyms": list(node.synonyms[:5]),
    }


def _view(state: ReportState, args: dict[str, Any], make: Any) -> tuple[dict[str, Any], Any]:
    if len(state.views) >= MAX_VIEWS:
        raise InvalidInput(f"at most {MAX_VIEWS} views per report")
    source = state.images.get(args["image_id"]) or state.views.get(args["image_id"])
    if source is None:
        raise NotFound("no such image or view")
    view = make(f"v{len(state.views) + 1}", source)
    state.views[view.id] = view
    width, height = view.image.size
    maps_to = view.to_original((0, 0, width, height))
    original = view.original
    result = {
        "view_id": view.id,
        "width": width,
        "height": height,
        "image_id": original.id,
        "box_in_image": list(maps_to),
    }
    return result, Region(original.id, maps_to, original.frame, f"view {view.id}")


TOOLS = {"search_evidence": search_evidence, "lookup_entity": lookup_entity}


def run_tool(state: ReportState, call: ToolCall, args: Any) -> tuple[dict[str, Any], Region | None]:
    """(result, the region a new view covers); ``args`` are the call's parsed arguments, or its
    text when that is not JSON."""
    if isinstance(args, str):
        raise InvalidInput("the arguments are not JSON")
    if not isinstance(args, dict):
        raise InvalidInput("the arguments are not a JSON object")
    if call.name == "zoom":
        return _view(state, args, lambda vid, src: images.zoom(vid, src, args.get("box")))
    if call.name == "rotate":
        return _view(state, args, lambda vid, src: images.rotate(vid, src, args.get("degrees", 0)))
    tool = TOOLS.get(call.name)
    if tool is None:
        raise NotFound(f"no tool {call.name!r}")
    return tool(state, args), None


def call_tool(state: ReportState, call: ToolCall, parent: str) -> tuple[str, dict[str, Any]]:
    """Run one call as a pair of trace steps after ``parent`` (none when empty); (the result
    step's id, the result)."""
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        arguments = call.arguments
    asked = state.trace.add(
        "reasoning",
        "tool_call",
        content=f"{call.name} called",
        parents=(parent,) if parent else (),
        tool=call.name,
        tool_call_id=call.id,
        arguments=arguments,
    )
    with state.trace.step(
        "reasoning", "tool_result", parents=(asked.id,), tool=call.name, tool_call_id=call.id
    ) as step:
        try:
            result, region = run_tool(state, call, arguments)
            step.regions = (region,) if region else ()
            step.content = f"{call.name} answered"
        except (InvalidInput, NotFound) as exc:  # the model sees why, and may try again
            result = {"error": str(exc)}
            step.status, step.content = "error", f"{call.name} refused: {exc}"
        step.result = result
    return step.id, result


def reason(state: ReportState) -> ReportState:
    request, deps = state.request, state.deps
    findings = [
        {"id": f.id, "text": f.text, "assertion": f.assertion, "side": f.laterality}
        for f in state.findings
    ]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": PROMPT},
        {
            "role": "user",
            "content": f"Clinical context: {request.context or '(none given)'}\n"
            f"Findings: {json.dumps(findings)}",
        },
    ]
    parents, calls, refused = [state.perception_step], 0, 0
    for turn in range(request.max_steps):
        if deps.deadline is not None and time.monotonic() > deps.deadline:
            state.trace.add("reasoning", "decision", content="stopped: the deadline is near")
            break
        # the agent consults at least one tool before it concludes
        reply = deps.model.call_tools(
            messages,
            tool_specs(state),
            "required" if turn == 0 else "auto",
            params=ChatParams(max_tokens=200),
        )
        if not reply.tool_calls:
            break
        messages.append(
            {
                "role": "assistant",
                "content": reply.text,
                "tool_calls": [c.as_dict() for c in reply.tool_calls],
            }
        )
        views = []
        for call in reply.tool_calls:
            step_id, result = call_tool(state, call, parents[-1])
            calls += 1
            refused += "error" in result
            parents.append(step_id)
            messages.append(
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
            )
            if "view_id" in result:
                views.append(images.png(state.views[result["view_id"]].image))
        if views:
            messages += with_images([{"role": "user", "content": "The new views."}], views)
    state.count("reason", kept=calls - refused, dropped=refused)
    return conclude(state, messages, parents)


def conclusion_schema(finding_ids: list[str], passage_ids: list[str]) -> dict[str, Any]:
    properties: dict[str, Any] = {"text": {"type": "string", "minLength": 1, "maxLength": 160}}
    if finding_ids:
        properties["finding_ids"] = {"type": "array", "items": {"enum": finding_ids}, "maxItems": 3}
    if passage_ids:
        properties["passage_ids"] = {"type": "array", "items": {"enum": passage_ids}, "maxItems": 2}
    return {
        "type": "object",
        "properties": {
            "conclusions": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_CONCLUSIONS,
                "items": {
                    "type": "object",
                    "properties": properties,
                    "required": sorted(properties),
                    "additionalProperties": False,
                },
            }
        },
        "required": ["conclusions"],
        "additionalProperties": False,
    }


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]{3,}", text.lower()))


def cite(state: ReportState, passage: Passage, claim: str) -> int:
    """The citation of the passage's sentence that shares most words with the claim (the first
    on a tie): its position in the report's citations, added once."""
    wanted = _words(claim)
    spans = [(m.start(), m.end()) for m in _SENTENCE.finditer(passage.text) if m.group().strip()]
    start, end = max(
        spans or [(0, len(passage.text))],
        key=lambda s: len(wanted & _words(passage.text[s[0] : s[1]])),
    )
    while start < end and passage.text[start].isspace():
        start += 1
    index = state.deps.index
    citation = Citation(
        index_name=state.deps.index_name,
        index_version=index.version if index else "",
        passage_id=passage.passage_id,
        start=passage.start + start,
        end=passage.start + end,
        quote=passage.text[start:end],
    )
    if citation not in state.citations:
        state.citations.append(citation)
    return state.citations.index(citation)


def conclude(state: ReportState, messages: list[dict[str, Any]], parents: list[str]) -> ReportState:
    finding_ids = [f.id for f in state.findings]
    passage_ids = sorted(state.retrieved)
    schema = json.dumps(conclusion_schema(finding_ids, passage_ids), sort_keys=True)
    ask = [*messages, {"role": "user", "content": CONCLUDE}]
    with state.trace.step("reasoning", "decision", parents=tuple(parents)) as step:
        reply = state.deps.model.chat(ask, params=ChatParams(max_tokens=600, json_schema=schema))
        try:
            items = json.loads(reply.text)["conclusions"]
        except (ValueError, KeyError, TypeError):
            items, step.status = [], "error"
        for item in items:
            text = " ".join(str(item.get("text", "")).split())
            if not text:
                continue
            cited = tuple(
                dict.fromkeys(
                    cite(state, state.retrieved[p], text) for p in item.get("passage_ids", ())
                )
            )
            state.conclusions.append(
                Conclusion(text, tuple(dict.fromkeys(item.get("finding_ids", ()))), cited)
            )
        used = {i for c in state.conclusions for i in c.citations}
        step.citations = tuple(state.citations[i] for i in sorted(used))
        rested = {i for c in state.conclusions for i in c.finding_ids}
        step.regions = tuple(
            f.region for f in state.findings if f.id in rested and f.region is not None
        )
        step.conclusion = " ".join(c.text for c in state.conclusions)
        step.content = f"{len(state.conclusions)} conclusions, {len(used)} citations"
    return state
