"""The report pipeline's steps on hand-written model answers: the model is scripted (random
weights cannot write a meaningful finding), everything else is real: the entity tree, the
evidence index, the template, the images, the verifier. The gRPC test runs the same pipeline
against a real predictor."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from PIL import Image

from medxiaohe.common.errors import InvalidInput
from medxiaohe.corpus.dicom import PixelBudget
from medxiaohe.entities.build import build_tree
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.evidence.index import EvidenceIndex
from medxiaohe.evidence.passages import Passage
from medxiaohe.models.chat import ChatParams, Usage
from medxiaohe.models.client import DEFAULT_PARAMS, ChatReply
from medxiaohe.models.tools import ToolCall
from medxiaohe.report import images
from medxiaohe.report.model import Finding
from medxiaohe.report.pipeline import generate
from medxiaohe.report.state import Deps, ReportRequest
from medxiaohe.report.style import BUILTIN, Conclusion, parse_template, phrase, render
from medxiaohe.report.trace import Step
from tests.conftest import small_records

EFFUSION = "Pleural effusion blunts the costophrenic angle. It may be left or right."


class Scripted:
    """A model client that answers from a script, and keeps what it was asked."""

    def __init__(self, replies: Sequence[ChatReply]) -> None:
        self.replies = list(replies)
        self.asked: list[tuple[str, Any]] = []

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        images: Sequence[bytes | str] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> ChatReply:
        self.asked.append(("chat", json.loads(params.json_schema or "null")))
        return self.replies.pop(0)

    def call_tools(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        tool_choice: str | dict[str, Any] = "auto",
        images: Sequence[bytes | str] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> ChatReply:
        self.asked.append(("tools", tool_choice))
        return self.replies.pop(0)

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the pipeline does not stream")


def text(value: object) -> ChatReply:
    return ChatReply(json.dumps(value), "stop", Usage(1, 1))


def calls(*pairs: tuple[str, dict[str, Any]]) -> ChatReply:
    made = tuple(ToolCall(f"call-{i}", n, json.dumps(a)) for i, (n, a) in enumerate(pairs))
    return ChatReply("", "tool_calls", Usage(1, 1), made)


FINDINGS = {
    "findings": [
        {
            "text": "pleural effusion",
            "site": "costophrenic angle",
            "laterality": "left",
            "assertion": "present",
            "confidence": 80,
            "image_id": "cxr",
            "box": [10, 60, 50, 95],
        },
        {
            "text": "pneumothorax",
            "site": "",
            "laterality": "",
            "assertion": "absent",
            "confidence": 90,
            "image_id": "cxr",
            "box": [500, 500, 900, 900],  # outside the image: no region
        },
    ]
}


@pytest.fixture(scope="module")
def deps() -> Deps:
    tree = build_tree(small_records())
    index = EvidenceIndex.build([Passage("p1", "d1", EFFUSION, 100, 100 + len(EFFUSION))])
    index.version = "v7"
    template = parse_template("chest-xray", (BUILTIN / "chest-xray.yaml").read_text(), "t1")
    return Deps(
        Scripted([]), "scripted", "s1", tree, DictionaryTagger(tree), template, index, "cxr"
    )


def run(deps: Deps, replies: list[ChatReply], **request: Any) -> tuple[Any, Any, list[Step]]:
    deps.model = Scripted(replies)
    picture = images.StudyImage("cxr", Image.new("RGB", (120, 100)))
    steps: list[Step] = []
    fields: dict[str, Any] = {"images": (picture,), "context": "Dyspnoea.", **request}
    report, state = generate(ReportRequest("req-1", "study-1", **fields), deps, "r-1", steps.append)
    return report, state, steps


def test_a_grounded_report_is_supported_and_cited(deps: Deps) -> None:
    report, state, steps = run(
        deps,
        [
            text(FINDINGS),
            calls(("search_evidence", {"query": "pleural effusion", "k": 1})),
            ChatReply("done", "stop", Usage(1, 1)),
            text(
                {
                    "conclusions": [
                        {
                            "text": "Left pleural effusion",
                            "finding_ids": ["f1"],
                            "passage_ids": ["p1"],
                        }
                    ]
                }
            ),
        ],
    )
    assert report.text == (
        "Findings: Left pleural effusion. No pneumothorax.\nImpression: Left pleural effusion."
    )
    assert [s.verdict for s in report.sentences()] == ["supported"] * 3
    (citation,) = report.citations
    assert (citation.index_name, citation.index_version, citation.passage_id) == ("cxr", "v7", "p1")
    assert citation.quote == "Pleural effusion blunts the costophrenic angle."
    assert EFFUSION[citation.start - 100 : citation.end - 100] == citation.quote
    assert report.findings[0].region.box == (10, 60, 50, 95)
    assert report.findings[1].region is None  # its box lay outside the image
    assert report.provenance.index_versions == {"cxr": "v7"}
    # the trace: the call and its result paired, each step after what it follows from
    kinds = [(s.agent, s.kind) for s in steps]
    assert kinds == [
        ("perception", "observation"),
        ("reasoning", "tool_call"),
        ("reasoning", "tool_result"),
        ("reasoning", "decision"),
        ("style", "decision"),
        ("verifier", "verification"),
    ]
    call, result = steps[1], steps[2]
    assert result.tool_call_id == call.tool_call_id == "call-0"
    assert result.parents == (call.id,)
    assert result.result["passages"][0]["passage_id"] == "p1"
    assert steps[3].citations == (citation,)
    assert state.stats["perceive"] == {"kept": 2, "dropped": 1, "seconds": pytest.approx(0, abs=5)}
    assert [a for a, _ in deps.model.asked] == ["chat", "tools", "tools", "chat"]
    assert deps.model.asked[1][1] == "required"  # the first turn consults a tool
    # the conclusions could cite only what was retrieved and rest only on real findings
    schema = deps.model.asked[3][1]["properties"]["conclusions"]["items"]["properties"]
    assert schema["passage_ids"]["items"] == {"enum": ["p1"]}
    assert schema["finding_ids"]["items"] == {"enum": ["f1", "f2"]}


def test_a_report_trace_exports_as_a_chat_trajectory(deps: Deps) -> None:
    from medxiaohe.agents.filtering import from_report_trace
    from medxiaohe.report.store import report_from_dict, report_to_dict

    said = "Left pleural effusion, told to Mrs. Ada Lovelace on 03/14/2024"
    conclusion = {"text": said, "finding_ids": ["f1"], "passage_ids": ["p1"]}
    query = "pleural effusion Mrs. Ada Lovelace MRN 48213377"
    report, _, steps = run(
        deps,
        [
            text(FINDINGS),
            calls(("search_evidence", {"query": query, "k": 1})),
            ChatReply("done", "stop", Usage(1, 1)),
            text({"conclusions": [conclusion]}),
        ],
    )
    stored = json.loads(json.dumps([s.as_dict() for s in steps]))  # as the store keeps it
    row = from_report_trace(report_from_dict(report_to_dict(report)), stored, "s" * 40)
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    (call,) = row["messages"][2]["tool_calls"]
    assert call["function"]["name"] == "search_evidence"
    arguments = json.loads(call["function"]["arguments"])
    assert arguments["k"] == 1
    assert arguments["query"].startswith("pleural effusion")
    assert row["messages"][3]["tool_call_id"] == call["id"]
    assert json.loads(row["messages"][3]["content"])["passages"][0]["passage_id"] == "p1"
    assert row["messages"][-1]["content"].startswith("Left pleural effusion")
    exported = json.dumps(row)
    assert "Dyspnoea" not in exported  # the clinical context is never exported
    for planted in ("Lovelace", "48213377", "03/14/2024"):  # model-written, de-identified
        assert planted not in exported
    assert row["provenance"]["report"] == "r-1"


def test_hallucinations_are_flagged_or_removed_by_policy(deps: Deps) -> None:
    script = [
        text(FINDINGS),
        ChatReply("nothing to look up", "stop", Usage(1, 1)),  # an answer, no tool call
        text(
            {
                "conclusions": [
                    {"text": "Right pleural effusion", "finding_ids": ["f1"]},
                    {"text": "Small pneumothorax", "finding_ids": []},
                    {"text": "Lobar pneumonia", "finding_ids": []},
                ]
            }
        ),
    ]
    flagged, _, _ = run(deps, list(script))
    verdicts = [(s.text, s.verdict, s.removed) for s in flagged.sections[1].sentences]
    assert verdicts == [
        ("Right pleural effusion.", "laterality", False),
        ("Small pneumothorax.", "negation", False),
        ("Lobar pneumonia.", "addition", False),
    ]
    removed, _, steps = run(deps, list(script), policy="remove")
    assert [s.removed for s in removed.sections[1].sentences] == [True] * 3
    assert removed.text == "Findings: Left pleural effusion. No pneumothorax."
    assert steps[-1].result["policy"] == "remove"
    assert removed.omissions == ()  # the findings section still says it


def test_a_clinicians_review_edits_decides_and_signs(deps: Deps) -> None:
    """Edits, accepted and removed flags, and the signed export: final, the signer the
    results interpreter and attester, an accepted flagged sentence back in the conclusion."""
    from medxiaohe.report.fhir import to_fhir
    from medxiaohe.report.review import Change, review_status, sign

    script = [
        text(FINDINGS),
        ChatReply("nothing to look up", "stop", Usage(1, 1)),
        text({"conclusions": [{"text": "Right pleural effusion", "finding_ids": ["f1"]},
                              {"text": "Lobar pneumonia", "finding_ids": []}]}),
    ]  # fmt: skip
    report, _, _ = run(deps, script)
    impression = report.sections[1].name
    assert review_status(report.sentences()) == "flagged"
    changes = [
        Change(impression, 0, "edit", after="Left  pleural\neffusion."),
        Change(impression, 1, "accept"),
    ]
    reviewed, signature = sign(report, changes, "dr-lee", "2026-12-07T08:00:00Z")
    sentences = reviewed.sections[1].sentences
    assert [(s.text, s.review, s.removed) for s in sentences] == [
        ("Left pleural effusion.", "edited", False),
        ("Lobar pneumonia.", "accepted", False),
    ]
    assert [(c.action, c.before) for c in signature.changes] == [
        ("edit", "Right pleural effusion."),
        ("accept", "Lobar pneumonia."),
    ]
    assert review_status(reviewed.sentences()) == "unreviewed"  # nothing left undecided
    bundle = to_fhir(reviewed, signature)  # validated against the R4 models inside
    diagnostic, provenance = bundle["entry"][0]["resource"], bundle["entry"][-1]["resource"]
    assert diagnostic["status"] == "final"
    assert diagnostic["resultsInterpreter"] == [{"display": "dr-lee"}]
    assert diagnostic["conclusion"] == "Left pleural effusion. Lobar pneumonia."
    assert provenance["signature"][0]["when"] == "2026-12-07T08:00:00Z"
    assert to_fhir(report)["entry"][0]["resource"]["status"] == "preliminary"
    removed, _ = sign(report, [Change(impression, 1, "remove")], "dr-lee", "2026-12-07T08:00:00Z")
    assert removed.sections[1].sentences[1].removed
    bad_changes = [
        Change(impression, 9, "edit", after="x"),
        Change(impression, 0, "approve"),
        Change("Nowhere", 0, "accept"),
        Change(impression, 0, "edit", after="  "),
    ]
    for bad in bad_changes:
        with pytest.raises(InvalidInput):
            sign(report, [bad], "dr-lee", "2026-12-07T08:00:00Z")
    with pytest.raises(InvalidInput):
        sign(report, [], "", "2026-12-07T08:00:00Z")  # nobody signs


def test_a_positive_finding_left_out_is_an_omission(deps: Deps) -> None:
    brief = parse_template(
        "impression-only",
        "name: Brief\nsections:\n  - title: Impression\n    from: conclusions\n"
        "phrasing: {present: '{text}.', uncertain: 'Possible {text}.', absent: 'No {text}.'}\n",
        "t2",
    )
    script = [
        text(FINDINGS),
        ChatReply("", "stop", Usage(1, 1)),
        text({"conclusions": [{"text": "No pneumothorax", "finding_ids": ["f2"]}]}),
    ]
    try:
        deps.template = brief
        report, _, steps = run(deps, script)
    finally:
        deps.template = parse_template(
            "chest-xray", (BUILTIN / "chest-xray.yaml").read_text(), "t1"
        )
    (omission,) = report.omissions
    assert (omission.finding_id, omission.text, omission.step_id) == (
        "f1",
        "pleural effusion",
        "s1",
    )
    assert omission.region is not None
    assert steps[-1].result["omissions"] == ["f1"]


def test_tools_refuse_bad_arguments_and_the_loop_goes_on(deps: Deps) -> None:
    report, state, steps = run(
        deps,
        [
            text(FINDINGS),
            calls(
                ("zoom", {"image_id": "cxr", "box": [60, 0, 10, 10]}),
                ("zoom", {"image_id": "cxr", "box": [60, 50, 120, 100]}),
                ("lookup_entity", {"query": "pneumonia"}),
                ("lookup_entity", {"query": "zzzz"}),
            ),
            calls(("rotate", {"image_id": "v1", "degrees": 90})),
            text({"conclusions": [{"text": "Nothing more", "finding_ids": []}]}),
        ],
        max_steps=2,
    )
    results = [s for s in steps if s.kind == "tool_result"]
    assert [r.status for r in results] == ["error", "ok", "ok", "error", "ok"]
    assert "inside the 120x100 image" in results[0].result["error"]
    assert results[1].result["box_in_image"] == [60, 50, 120, 100]
    assert results[2].result["id"] == "ICD10CM:J18.9"
    assert results[4].regions[0].box == (60, 50, 120, 100)  # a view of a view, mapped back
    assert set(state.views) == {"v1", "v2"}
    # max_steps=2: two tool turns, then the conclusions
    assert [kind for kind, _ in deps.model.asked] == ["chat", "tools", "tools", "chat"]
    assert report.sections[1].sentences[0].verdict == "not_checked"


def test_views_map_back_to_the_original_pixels() -> None:
    original = Image.new("RGB", (200, 100))
    original.paste((255, 0, 0), (150, 10, 170, 30))  # a red patch
    image = images.StudyImage("i", original)
    zoomed = images.zoom("v1", image, [100, 0, 200, 50])
    assert zoomed.image.size == (448, 224)
    assert zoomed.to_original((0, 0, 448, 224)) == (100, 0, 200, 50)
    for degrees in images.ROTATIONS:
        turned = images.rotate("v2", zoomed, degrees)
        red = [
            (x, y)
            for x in range(turned.image.width)
            for y in range(turned.image.height)
            if turned.image.getpixel((x, y))[0] > 200
        ]
        xs, ys = [x for x, _ in red], [y for _, y in red]
        box = turned.to_original((min(xs), min(ys), max(xs) + 1, max(ys) + 1))
        assert all(abs(a - b) <= 1 for a, b in zip(box, (150, 10, 170, 30), strict=True)), degrees
    with pytest.raises(InvalidInput, match="inside the 200x100 image"):
        images.zoom("v3", image, [0, 0, 300, 10])
    with pytest.raises(InvalidInput, match="degrees"):
        images.rotate("v3", image, 45)


def test_style_phrases_without_adding_content() -> None:
    template = parse_template("generic", (BUILTIN / "generic.yaml").read_text(), "t")
    findings = [
        Finding("f1", "no pleural effusion", "absent", laterality="left"),
        Finding("f2", "Opacity in the right lower lobe.", "present", laterality="right"),
        Finding("f3", "nodule", "uncertain"),
    ]
    assert phrase(template.phrasing["absent"], findings[0]) == "No left pleural effusion."
    sections = render(template, findings, [Conclusion("pneumonia", ("f2",), (0,))])
    assert [s.name for s in sections] == ["Findings", "Conclusion"]
    assert [(s.text, s.finding_ids) for s in sections[0].sentences] == [
        ("Opacity in the right lower lobe.", ("f2",)),  # its side is said once
        ("Nodule is uncertain.", ("f3",)),
        ("No left pleural effusion.", ("f1",)),
    ]
    assert sections[1].sentences[0].citations == (0,)
    with pytest.raises(InvalidInput, match="malformed"):
        parse_template("x", "sections: [{title: A, from: nowhere}]", "t")


def test_requests_are_checked_before_any_work() -> None:
    with pytest.raises(InvalidInput, match="images or clinical context"):
        ReportRequest("r", "s")
    with pytest.raises(InvalidInput, match="max_steps"):
        ReportRequest("r", "s", context="x", max_steps=0)
    with pytest.raises(InvalidInput, match="policy"):
        ReportRequest("r", "s", context="x", policy="hide")
    with pytest.raises(InvalidInput, match="cannot be decoded"):
        images.decode_image(b"GIF89a....", "g", PixelBudget(100))
