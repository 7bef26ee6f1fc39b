"""An agent that answers a question with the report pipeline's tools (evidence search, Medical
Entity Tree lookup, image zoom and rotate) through OpenAI tool calls, and records each run as
a trajectory: the messages in OpenAI's shape (the assistant's ``tool_calls``, each tool's
result as a ``tool`` message), then the final answer.

The same question is also answered without tools, so the two-level filter (``filtering``) can
tell whether the tool was needed."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.entities.tree import EntityTree
from medxiaohe.evidence.index import EvidenceIndex
from medxiaohe.models.chat import ChatParams
from medxiaohe.models.client import ModelClient, with_images
from medxiaohe.report import images as views
from medxiaohe.report.images import StudyImage
from medxiaohe.report.reasoning import call_tool, tool_specs
from medxiaohe.report.state import MAX_STEPS, Deps, ReportRequest, ReportState, handles
from medxiaohe.report.style import BUILTIN, Template, parse_template
from medxiaohe.report.trace import Trace

SYSTEM = (
    "You answer medical questions. You may first use the tools: search the evidence, look up "
    "entities in the Medical Entity Tree, zoom into or rotate an image. When you know enough, "
    "answer without a tool call, ending with 'The answer is <answer>.'"
)
SYSTEM_NO_TOOLS = "You answer medical questions, ending with 'The answer is <answer>.'"
Check = Callable[[str, str, str], bool]  # (final answer text, gold, question) -> correct


def check_answer(final: str, gold: str, question: str = "") -> bool:
    """The option the answer chooses (``rubric.answers``, with the question's options), when the
    gold answer is a letter; else the final answer itself, case and spacing aside."""
    from medxiaohe.rubric.answers import extract_option, options_from_prompt
    from medxiaohe.rubric.rewards import final_answer

    if len(gold) == 1 and gold.isalpha():
        return extract_option(final, options_from_prompt(question)) == gold.upper()
    return " ".join(final_answer(final).lower().split()) == " ".join(gold.lower().split())


@dataclass(frozen=True)
class Question:
    id: str
    text: str  # the question as the user asks it (options included)
    answer: str  # the gold answer
    images: tuple[StudyImage, ...] = ()


@dataclass
class Trajectory:
    question: Question
    tools: bool  # whether tools were offered
    messages: list[dict[str, Any]] = field(default_factory=list)
    offered: list[dict[str, Any]] = field(default_factory=list)  # the tool specs, first turn
    final: str = ""
    correct: bool = False

    @property
    def tool_calls(self) -> list[str]:
        """The names of the tools called, in order."""
        return [
            c["function"]["name"]
            for m in self.messages
            if m["role"] == "assistant"
            for c in m.get("tool_calls") or ()
        ]

    @property
    def tool_answers(self) -> int:
        """How many tool calls were answered (not refused with an error)."""
        return sum(
            m["role"] == "tool" and not m["content"].startswith('{"error"') for m in self.messages
        )


@dataclass
class Toolbox:
    """What the tools reach: the entity tree and its tagger, the evidence index (None without
    one). The model is the agent's."""

    tree: EntityTree
    tagger: Any
    index: EvidenceIndex | None = None
    index_name: str = ""

    @cached_property
    def template(self) -> Template:
        """The report state wants one; the tools never read it."""
        return parse_template("chest-xray", (BUILTIN / "chest-xray.yaml").read_text(), "qa")

    def state(self, model: ModelClient, question: Question) -> ReportState:
        """A fresh tool state for one run (its own views, retrieved passages and trace)."""
        deps = Deps(
            model, "agent", "", self.tree, self.tagger, self.template, self.index, self.index_name
        )
        request = ReportRequest(
            question.id, question.id, question.images, context=question.text, max_steps=MAX_STEPS
        )
        return ReportState(request, deps, Trace(), images=handles(question.images))


def answer(
    model: ModelClient,
    question: Question,
    toolbox: Toolbox | None = None,
    max_steps: int = 4,
    max_tokens: int = 256,
    check: Check = check_answer,
) -> Trajectory:
    """One run: with ``toolbox``, tool calls (the first turn must call one) until the model
    answers or ``max_steps`` turns pass; without, a plain answer. Greedy decoding."""
    if not 1 <= max_steps <= MAX_STEPS:
        raise InvalidInput(f"max_steps must be between 1 and {MAX_STEPS}")
    pictures = [views.png(i.image) for i in question.images]
    run = Trajectory(question, toolbox is not None)
    run.messages = [
        {"role": "system", "content": SYSTEM if toolbox else SYSTEM_NO_TOOLS},
        {"role": "user", "content": question.text},
    ]
    params = ChatParams(max_tokens=max_tokens)
    if toolbox is not None:
        state = toolbox.state(model, question)
        parent = ""
        run.offered = tool_specs(state)
        for turn in range(max_steps):
            reply = model.call_tools(
                with_images(run.messages, pictures),
                tool_specs(state),
                "required" if turn == 0 else "auto",
                params=params,
            )
            if not reply.tool_calls:
                run.final = reply.text
                break
            run.messages.append(
                {
                    "role": "assistant",
                    "content": reply.text,
                    "tool_calls": [c.as_dict() for c in reply.tool_calls],
                }
            )
            for call in reply.tool_calls:
                parent, result = call_tool(state, call, parent)
                run.messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
                )
    if not run.final:  # no tools, or the turns ran out: answer now
        run.final = model.chat(with_images(run.messages, pictures), params=params).text
    run.messages.append({"role": "assistant", "content": run.final})
    run.correct = check(run.final, question.answer, question.text)
    return run


def pair(
    model: ModelClient, questions: Sequence[Question], toolbox: Toolbox, max_steps: int = 4
) -> list[tuple[Trajectory, Trajectory]]:
    """Each question answered without tools, then with them."""
    return [(answer(model, q), answer(model, q, toolbox, max_steps)) for q in questions]
