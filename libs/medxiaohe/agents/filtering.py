"""Which tool-augmented trajectories to train on, and how they are stored.

The paper's two-level filter keeps a trajectory only when the item needs the tool (the same
model fails it without tools) and the tool run succeeds, having had at least one tool call
answered (a run whose every call was refused did not use a tool). Kept runs are
published as chat data with their tool calls (``train.jsonl``, for SFT) and as prompts with
gold answers (``prompts.jsonl``, for RL), each row with its provenance. Report-service traces
export to the same chat shape."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medxiaohe.agents.tool_agent import Trajectory
from medxiaohe.corpus.deid import deidentify
from medxiaohe.report.model import Report
from medxiaohe.report.reasoning import PROMPT
from medxiaohe.report.store import map_strings
from medxiaohe.storage import ArtifactStore, Manifest
from medxiaohe.training.chat_data import publish_chat

KEPT = "kept: the tool run succeeded where the no-tool run failed"
SOLVED_WITHOUT = "dropped: solved without tools"
TOOL_RUN_FAILED = "dropped: the tool run failed"
NO_TOOL_CALLED = "dropped: no tool call of the tool run was answered"


@dataclass(frozen=True)
class Filtered:
    kept: tuple[Trajectory, ...]
    reasons: dict[str, str]  # question id -> why it was kept or dropped
    counts: dict[str, float]


def verdict(no_tools: Trajectory, with_tools: Trajectory) -> str:
    if no_tools.correct:
        return SOLVED_WITHOUT
    if not with_tools.tool_answers:
        return NO_TOOL_CALLED
    return KEPT if with_tools.correct else TOOL_RUN_FAILED


def two_level_filter(pairs: Sequence[tuple[Trajectory, Trajectory]]) -> Filtered:
    """Keep the tool runs the tools made right; counts: items, kept, keep_rate, each reason,
    and how often the tool run beat the no-tool run and the reverse."""
    reasons = {plain.question.id: verdict(plain, tooled) for plain, tooled in pairs}
    kept = tuple(tooled for plain, tooled in pairs if reasons[plain.question.id] == KEPT)
    why = Counter(reasons.values())
    n = max(1, len(pairs))
    counts: dict[str, float] = {
        "items": len(pairs),
        "kept": len(kept),
        "keep_rate": round(len(kept) / n, 4),
        "solved_without_tools": why[SOLVED_WITHOUT],
        "tool_run_failed": why[TOOL_RUN_FAILED],
        "no_tool_called": why[NO_TOOL_CALLED],
        "tool_beat_no_tool": round(sum(t.correct and not p.correct for p, t in pairs) / n, 4),
        "no_tool_beat_tool": round(sum(p.correct and not t.correct for p, t in pairs) / n, 4),
        "accuracy_no_tools": round(sum(p.correct for p, _ in pairs) / n, 4),
        "accuracy_tools": round(sum(t.correct for _, t in pairs) / n, 4),
    }
    return Filtered(kept, reasons, counts)


def chat_row(run: Trajectory, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """A kept run as a chat row: its messages, tool calls and results included."""
    return {
        "messages": run.messages,
        "tools": run.offered,
        "answer": run.question.answer,
        "provenance": {**provenance, "item": run.question.id, "tools": run.tool_calls},
    }


def prompt_row(run: Trajectory, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The same item as an RL prompt: system and question, the gold answer to verify."""
    row = chat_row(run, provenance)
    ask = [*run.messages[:2], {"role": "assistant", "content": row["answer"]}]
    return {k: v for k, v in row.items() if k != "tools"} | {"messages": ask}


def publish_trajectories(
    store: ArtifactStore, name: str, filtered: Filtered, provenance: Mapping[str, Any]
) -> Manifest:
    """``trajectories/<name>``: train.jsonl (SFT), prompts.jsonl (RL), with the filter's
    counts and the provenance in the manifest."""
    splits = {
        "train": [chat_row(r, provenance) for r in filtered.kept],
        "prompts": [prompt_row(r, provenance) for r in filtered.kept],
    }
    meta = {**provenance, "filter": filtered.counts}
    return publish_chat(store, f"trajectories/{name}", splits, {}, meta)


def from_report_trace(
    report: Report, trace: Sequence[Mapping[str, Any]], secret: str
) -> dict[str, Any]:
    """A stored report's reasoning as a chat row: the reasoning agent's prompt, the findings
    it was given, each turn's tool calls and results, and the impression it concluded. The
    clinical context is not stored with a report, so it is not exported either. Read ``report``
    and ``trace`` without the report keys (ids stay pseudonyms); every string the model or a
    tool wrote then passes the ingestion pipeline's de-identification, keyed by ``secret``."""

    def clean(value: Any) -> Any:
        return map_strings(value, lambda text: deidentify(text, secret)[0])

    findings = [
        {"id": f.id, "text": f.text, "assertion": f.assertion, "side": f.laterality}
        for f in report.findings
    ]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": PROMPT},
        {"role": "user", "content": f"Findings: {json.dumps(clean(findings))}"},
    ]
    conclusion = ""
    for step in trace:
        if step["agent"] != "reasoning":
            continue
        if step["kind"] == "tool_call":
            call = {
                "id": step["tool_call_id"],
                "type": "function",
                "function": {
                    "name": step["tool"],
                    "arguments": json.dumps(clean(step["arguments"])),
                },
            }
            # one call per turn: the trace does not say which calls shared a turn
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif step["kind"] == "tool_result":
            content = json.dumps(clean(step["result"]))
            messages.append(
                {"role": "tool", "tool_call_id": step["tool_call_id"], "content": content}
            )
        elif step["kind"] == "decision" and step.get("conclusion"):
            conclusion = clean(step["conclusion"])
    messages.append({"role": "assistant", "content": conclusion})
    provenance = {
        "source": "report-trace",
        "report": report.id,
        "model_version": report.provenance.model_version,
        "entity_tree_version": report.provenance.entity_tree_version,
        "index_versions": dict(report.provenance.index_versions),
    }
    return {"messages": messages, "provenance": provenance}
