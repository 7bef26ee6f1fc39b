"""The perception agent: the vision-language model reads the study's images and the clinical
context and returns structured findings (text, site, side, assertion, a region in the original
image's pixels, confidence), constrained by a JSON schema so any model's answer parses."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from medxiaohe.models.chat import ChatParams
from medxiaohe.report.images import png
from medxiaohe.report.model import ASSERTIONS, Finding, Region

if TYPE_CHECKING:
    from medxiaohe.report.state import ReportState

MAX_FINDINGS = 4
SIDES = ("", "left", "right", "bilateral")
PROMPT = (
    "You are the perception agent of a radiology reporting pipeline. List what the images show "
    "as findings: one observation each, its anatomical site, its side, whether it is present, "
    "absent or uncertain, the image it is seen on and its box [x0, y0, x1, y1] in that image's "
    "pixels, and your confidence in percent. Report only what the images and the clinical "
    "context support."
)


def finding_schema(image_ids: list[str]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "text": {"type": "string", "minLength": 1, "maxLength": 60},
        "site": {"type": "string", "maxLength": 24},
        "laterality": {"enum": list(SIDES)},
        "assertion": {"enum": list(ASSERTIONS)},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
    }
    if image_ids:
        properties["image_id"] = {"enum": image_ids}
        properties["box"] = {
            "type": "array",
            "items": {"type": "integer"},
            "minItems": 4,
            "maxItems": 4,
        }
    return {
        "type": "object",
        "properties": {
            "findings": {
                "type": "array",
                "maxItems": MAX_FINDINGS,
                "items": {
                    "type": "object",
                    "properties": properties,
                    "required": sorted(properties),
                    "additionalProperties": False,
                },
            }
        },
        "required": ["findings"],
        "additionalProperties": False,
    }


def _region(item: dict[str, Any], state: ReportState) -> Region | None:
    """The finding's box clipped to its image; None when nothing of it is left."""
    image = state.images.get(str(item.get("image_id", "")))
    box = item.get("box")
    if image is None or not isinstance(box, list) or len(box) != 4:
        return None
    width, height = image.image.size
    x0, y0, x1, y1 = (
        min(max(int(v), 0), limit) for v, limit in zip(box, (width, height) * 2, strict=True)
    )
    if x0 >= x1 or y0 >= y1:
        return None
    return Region(image.id, (x0, y0, x1, y1), image.frame, str(item.get("text", ""))[:60])


def perceive(state: ReportState) -> ReportState:
    request = state.request
    handles = list(state.images)
    text = f"Clinical context: {request.context or '(none given)'}"
    if handles:
        text += f"\nImages, in order: {', '.join(handles)}"
    messages = [{"role": "system", "content": PROMPT}, {"role": "user", "content": text}]
    schema = json.dumps(finding_schema(handles), sort_keys=True)
    with state.trace.step("perception", "observation") as step:
        reply = state.deps.model.chat(
            messages,
            [png(state.images[h].image) for h in handles],
            ChatParams(max_tokens=800, json_schema=schema),
        )
        items = _parsed(reply.text)
        dropped = 0
        for item in items:
            region = _region(item, state) if handles else None
            dropped += bool(handles) and region is None
            state.findings.append(
                Finding(
                    id=f"f{len(state.findings) + 1}",
                    text=" ".join(str(item["text"]).split()),
                    assertion=item["assertion"],
                    site=str(item.get("site", "")).strip(),
                    laterality=item.get("laterality", ""),
                    region=region,
                    confidence=int(item["confidence"]) / 100,
                )
            )
        step.content = f"{len(state.findings)} findings" + (
            f"; {dropped} boxes outside their image dropped" if dropped else ""
        )
        step.result = [asdict(f) for f in state.findings]
        step.regions = tuple(f.region for f in state.findings if f.region is not None)
        step.status = "ok" if reply.finish_reason != "length" else "error"
        state.perception_step = step.id
    state.count("perceive", kept=len(state.findings), dropped=dropped)
    return state


def _parsed(text: str) -> list[dict[str, Any]]:
    """The findings of a constrained answer; none when the budget cut it short."""
    try:
        items = json.loads(text)["findings"]
    except (ValueError, KeyError, TypeError):
        return []
    return [i for i in items if isinstance(i, dict) and str(i.get("text", "")).strip()]
