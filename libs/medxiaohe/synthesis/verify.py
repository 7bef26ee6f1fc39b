"""Rules every item passes before anything is written; the first one that fails is its reason."""

from __future__ import annotations

import re
from collections.abc import Callable

from medxiaohe.synthesis.items import Item
from medxiaohe.synthesis.knowledge import Knowledge


def distinct_options(item: Item, knowledge: Knowledge) -> str:
    names = [n.lower() for n in item.options(knowledge)]
    if len(item.option_ids) != 4 or len(set(names)) != 4 or len(set(item.option_ids)) != 4:
        return "the four options are not distinct"
    return ""


def _satisfies(item: Item, knowledge: Knowledge, option: str) -> bool:
    """Whether an option fits every fact the question states."""
    if item.kind == "diagnosis":
        return set(item.stated) <= knowledge.phenotypes.get(option, frozenset())
    if item.kind == "multi_hop":
        (term,) = item.stated
        candidates = {
            knowledge.category(t)
            for t in knowledge.phenotypes.get(item.node_id, ())
            if knowledge.definitions.get(t) == knowledge.definitions.get(term)
        }
        return option in candidates
    if item.kind == "definition":
        (node,) = item.stated
        return knowledge.definitions.get(option) == knowledge.definitions.get(node)
    return option in knowledge.parents.get(item.node_id, ())  # classification


def unique_answer(item: Item, knowledge: Knowledge) -> str:
    fitting = [i for i, o in enumerate(item.option_ids) if _satisfies(item, knowledge, o)]
    if fitting != [item.answer]:
        return f"{len(fitting)} options fit the stated facts, not exactly the answer"
    return ""


def no_leak(item: Item, knowledge: Knowledge) -> str:
    """The question names neither the answer nor a masked entity (nor a synonym of them)."""
    hidden = {item.option_ids[item.answer], *item.masked}
    for node in hidden:
        for form in knowledge.surface(node):
            if len(form) > 2 and re.search(rf"(?<!\w){re.escape(form)}(?!\w)", item.question, re.I):
                return "the question names the answer or a masked entity"
    return ""


def grounded_chain(item: Item, knowledge: Knowledge) -> str:
    for subject, relation, obj, holds in item.claims:
        if knowledge.holds((subject, relation, obj)) != holds:
            return (
                f"the chain states {relation}({subject}, {obj}) = {holds}, which the graph does not"
            )
    return ""


RULES: dict[str, Callable[[Item, Knowledge], str]] = {
    "distinct_options": distinct_options,
    "unique_answer": unique_answer,
    "no_leak": no_leak,
    "grounded_chain": grounded_chain,
}


def verify(item: Item, knowledge: Knowledge) -> tuple[str, str]:
    """("", "") when every rule passes, else (the rule, its reason)."""
    for name, rule in RULES.items():
        reason = rule(item, knowledge)
        if reason:
            return name, reason
    return "", ""
