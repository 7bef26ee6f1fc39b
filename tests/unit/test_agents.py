"""The tool agent and the two-level filter: the model is scripted (it reads the tool results it
is given, so whether a tool helped is decided by the real tool), the Medical Entity Tree, its
tagger and the tools are real."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from medxiaohe.agents.filtering import (
    KEPT,
    NO_TOOL_CALLED,
    SOLVED_WITHOUT,
    TOOL_RUN_FAILED,
    publish_trajectories,
    two_level_filter,
)
from medxiaohe.agents.tool_agent import Question, Toolbox, answer, check_answer, pair
from medxiaohe.entities.build import build_tree
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.models.chat import ChatParams, Usage
from medxiaohe.models.client import DEFAULT_PARAMS, ChatReply
from medxiaohe.models.tools import ToolCall
from medxiaohe.storage import open_store
from medxiaohe.training.chat_data import read_chat, tools_as_text
from tests.conftest import small_records

OPTIONS = "\nA. common\nB. rare"


class Reader:
    """Answers "rare" only when a tool result in front of it says so; asked to call a tool,
    looks up the entity the question names (none for a question that names none)."""

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        images: Sequence[bytes | str] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> ChatReply:
        told = any(m["role"] == "tool" and '"rare": true' in m["content"] for m in messages)
        return ChatReply(f"The answer is {'B' if told else 'A'}.", "stop", Usage(1, 1))

    def call_tools(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        tool_choice: str | dict[str, Any] = "auto",
        images: Sequence[bytes | str] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> ChatReply:
        question = str(messages[1]["content"])
        named = next((n for n in ("Marfan syndrome", "Fever", "Seizure") if n in question), "")
        if tool_choice == "required" and named:
            call = ToolCall("call-1", "lookup_entity", json.dumps({"query": named}))
            return ChatReply("", "tool_calls", Usage(1, 1), (call,))
        return self.chat(messages)

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the agent does not stream")


@pytest.fixture(scope="module")
def toolbox() -> Toolbox:
    tree = build_tree(small_records())
    return Toolbox(tree, DictionaryTagger(tree))


QUESTIONS = [
    Question("q-marfan", "Is Marfan syndrome common or rare?" + OPTIONS, "B"),  # tool helps
    Question("q-fever", "Is Fever common or rare?" + OPTIONS, "A"),  # solved without
    Question("q-seizure", "Is Seizure rare? Trick question." + OPTIONS, "B"),  # tool no help
    Question("q-none", "Is it rare?" + OPTIONS, "B"),  # nothing to look up
]


def test_the_filter_keeps_a_tool_helped_run_and_drops_the_rest(toolbox: Toolbox) -> None:
    filtered = two_level_filter(pair(Reader(), QUESTIONS, toolbox))  # type: ignore[arg-type]
    assert [run.question.id for run in filtered.kept] == ["q-marfan"]
    assert filtered.reasons == {
        "q-marfan": KEPT,
        "q-fever": SOLVED_WITHOUT,
        "q-seizure": TOOL_RUN_FAILED,
        "q-none": NO_TOOL_CALLED,
    }
    counts = filtered.counts
    assert counts["keep_rate"] == 0.25
    assert counts["tool_beat_no_tool"] == 0.25
    assert counts["no_tool_beat_tool"] == 0.0
    (kept,) = filtered.kept
    roles = [m["role"] for m in kept.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert kept.tool_calls == ["lookup_entity"]
    assert json.loads(kept.messages[3]["content"])["id"] == "ORPHA:558"  # the real tree's answer
    assert kept.final == "The answer is B."


def test_kept_trajectories_are_chat_data_with_tool_calls_and_provenance(
    toolbox: Toolbox, local_store_uri: str
) -> None:
    filtered = two_level_filter(pair(Reader(), QUESTIONS, toolbox))  # type: ignore[arg-type]
    store = open_store(local_store_uri)
    provenance = {"model": "reader", "questions": "unit"}
    manifest = publish_trajectories(store, "unit", filtered, provenance)
    assert manifest.metadata["filter"]["kept"] == 1
    (row,) = read_chat(store, "trajectories/unit:train.jsonl")
    assert row["messages"][2]["tool_calls"][0]["function"]["name"] == "lookup_entity"
    assert row["answer"] == "B"
    assert {t["function"]["name"] for t in row["tools"]} == {"lookup_entity"}
    # SFT reads the calls the way the predictor renders them for a template without tools
    shown = tools_as_text(row)["messages"]
    assert "lookup_entity" in shown[0]["content"]  # the tools, listed
    assert json.loads(shown[3]["content"]) == {
        "name": "lookup_entity", "arguments": {"query": "Marfan syndrome"}
    }  # fmt: skip
    assert not any(m.get("tool_calls") for m in shown)
    (prompt,) = read_chat(store, "trajectories/unit:prompts.jsonl")
    assert [m["role"] for m in prompt["messages"]] == ["system", "user", "assistant"]
    raw = store.get_bytes(f"{manifest.prefix}/{manifest.version}/train.jsonl")
    assert json.loads(raw)["provenance"] == {
        "model": "reader", "questions": "unit", "item": "q-marfan", "tools": ["lookup_entity"]
    }  # fmt: skip


def test_a_run_out_of_turns_still_answers(toolbox: Toolbox) -> None:
    class Looper(Reader):
        def call_tools(self, messages: Sequence[dict[str, Any]], *a: Any, **k: Any) -> ChatReply:
            call = ToolCall(f"c{len(messages)}", "lookup_entity", '{"query": "Fever"}')
            return ChatReply("", "tool_calls", Usage(1, 1), (call,))

    run = answer(Looper(), QUESTIONS[1], toolbox, max_steps=2)  # type: ignore[arg-type]
    assert run.tool_calls == ["lookup_entity", "lookup_entity"]
    assert run.messages[-1] == {"role": "assistant", "content": "The answer is A."}
    assert run.correct


@pytest.mark.parametrize(
    ("final", "gold", "right"),
    [
        ("The answer is B.", "B", True),
        ("<think>A or B</think>Answer: (A)", "B", False),
        ("The answer is pleural effusion.", "Pleural  effusion", True),
        ("effusion", "pleural effusion", False),
    ],
)
def test_answers_are_checked_by_letter_or_exactly(final: str, gold: str, right: bool) -> None:
    assert check_answer(final, gold) is right


def test_a_tool_run_whose_calls_were_all_refused_is_dropped(toolbox: Toolbox) -> None:
    class Guesser(Reader):
        """Calls a tool with a query nothing matches, then guesses right anyway."""

        def call_tools(self, messages: Sequence[dict[str, Any]], *a: Any, **k: Any) -> ChatReply:
            if messages[-1]["role"] == "tool":
                return ChatReply("The answer is B.", "stop", Usage(1, 1))
            call = ToolCall("c1", "lookup_entity", '{"query": "no such thing"}')
            return ChatReply("", "tool_calls", Usage(1, 1), (call,))

    filtered = two_level_filter(pair(Guesser(), QUESTIONS[:1], toolbox))  # type: ignore[arg-type]
    assert filtered.reasons == {"q-marfan": NO_TOOL_CALLED}
    assert filtered.counts["tool_beat_no_tool"] == 1.0  # right, but not thanks to a tool
