"""Knowledge synthesis on a hand-made graph: each verification rule rejects a bad item made for
it, a diagnosis item's answer is the only option with every stated phenotype, the held-out
split is disjoint by node, and a panel of model experts (the tiny model) votes through the
model client."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from pathlib import Path

import pytest

from medxiaohe.synthesis.items import KINDS, diagnosis, multi_hop
from medxiaohe.synthesis.knowledge import PHENOTYPE_ROOT, Knowledge
from medxiaohe.synthesis.pipeline import ExpertPanel, chat_item, held_out, synthesize
from medxiaohe.synthesis.verify import verify

CATEGORIES = {
    "HP:E": "Abnormality of the eye",
    "HP:H": "Abnormality of the heart",
    "HP:S": "Abnormality of the skeleton",
    "HP:K": "Abnormality of the kidney",
}


def graph() -> Knowledge:
    names = {PHENOTYPE_ROOT: "Phenotypic abnormality", **CATEGORIES}
    parents: dict[str, tuple[str, ...]] = {c: (PHENOTYPE_ROOT,) for c in CATEGORIES}
    definitions = {}
    for c in CATEGORIES:  # each category: two groups of two phenotypes
        for g in "12":
            group = f"{c}{g}"
            names[group], parents[group] = f"{CATEGORIES[c]} group {g}", (c,)
            for p in "ab":
                term = f"{group}{p}"
                names[term], parents[term] = f"Finding {term[3:]}", (group,)
                definitions[term] = f"A finding of kind {term[3:]} seen on examination."
    terms = sorted(t for t in names if len(t) == 6)
    phenotypes = {
        "ORPHA:1": frozenset({"HP:E1a", "HP:H1a", "HP:S1a", "HP:K1a"}),
        "ORPHA:2": frozenset({"HP:E1a", "HP:H1a", "HP:K2b"}),  # shares two
        "ORPHA:3": frozenset({"HP:E1a", "HP:S2a"}),
        "ORPHA:4": frozenset({"HP:H1a", "HP:S1b"}),
        "ORPHA:5": frozenset({"HP:S1a", "HP:K1b", "HP:E2b"}),
    }
    for d in phenotypes:
        names[d] = f"Syndrome {d[-1]}"
    assert set().union(*phenotypes.values()) <= set(terms)
    return Knowledge(names, parents, phenotypes, {"ORPHA:1": ("Oneill disease",)}, definitions)


def test_a_diagnosis_has_one_answer_with_every_stated_phenotype() -> None:
    knowledge = graph()
    item = diagnosis(knowledge, "ORPHA:1", random.Random(0))
    assert item is not None
    assert verify(item, knowledge) == ("", "")
    fitting = [o for o in item.option_ids if set(item.stated) <= knowledge.phenotypes[o]]
    assert fitting == [item.option_ids[item.answer]] == ["ORPHA:1"]
    assert len(item.stated) == 3
    assert all(knowledge.phenotypes[o] & set(item.stated) for o in item.option_ids)  # hard
    assert set(item.chain) == {"understanding", "recall", "reasoning", "conclusion"}
    hop = multi_hop(knowledge, "ORPHA:1", random.Random(0))
    assert hop is not None
    assert verify(hop, knowledge) == ("", "")
    assert len(hop.claims) >= 3  # disease -> phenotype -> group -> category
    assert knowledge.names[hop.stated[0]] not in hop.question  # the phenotype is masked


def test_each_rule_rejects_the_bad_item_made_for_it() -> None:
    knowledge = graph()
    good = diagnosis(knowledge, "ORPHA:1", random.Random(0))
    assert good is not None
    others = [o for o in good.option_ids if o != "ORPHA:1"]
    shared = next(t for t in good.stated if any(t in knowledge.phenotypes[o] for o in others))
    twin = list(good.option_ids)
    twin[(good.answer + 1) % 4] = good.option_ids[good.answer]
    bad = {
        "distinct_options": dataclasses.replace(good, option_ids=tuple(twin)),
        "unique_answer": dataclasses.replace(good, stated=(shared,)),  # a distractor has it
        "no_leak": dataclasses.replace(good, question=good.question + " Think of Oneill disease."),
        "grounded_chain": dataclasses.replace(
            good, claims=(*good.claims, ("ORPHA:3", "has_phenotype", "HP:K1a", True))
        ),
    }
    for rule, item in bad.items():
        assert verify(item, knowledge)[0] == rule


def test_the_held_out_split_is_disjoint_by_node() -> None:
    knowledge = graph()
    nodes = sorted(knowledge.names)
    result = synthesize(knowledge, nodes, seed=4)
    rows = [chat_item(i, knowledge, "t1", seed=4) for i in result.accepted]
    train = {r["provenance"]["node_id"] for r in rows if r["split"] == "train"}
    heldout = {r["provenance"]["node_id"] for r in rows if r["split"] == "heldout"}
    assert not train & heldout
    assert {r["kind"] for r in rows} <= set(KINDS)
    assert all(r["messages"][1]["content"].startswith("<think>\nUnderstanding:") for r in rows)
    assert sum(held_out(f"n{i}", 0) for i in range(2000)) == pytest.approx(200, abs=45)
    summary = result.summary(["ORPHA:1", "ORPHA:9"])
    assert summary["gap_nodes_with_items"] == 1
    assert summary["accepted"] + sum(summary["rejected_by_rule"].values()) == summary["generated"]


def test_a_panel_of_experts_votes_through_the_model_client(tiny_model: Path) -> None:
    from medxiaohe.models.chat import ChatModel
    from medxiaohe.models.client import LocalModelClient
    from medxiaohe.models.vlm import load_vlm

    knowledge = graph()
    panel = ExpertPanel([LocalModelClient(ChatModel(load_vlm(tiny_model)))], votes=3)
    result = synthesize(knowledge, ["ORPHA:1"], seed=0, experts=panel)
    verified = len(result.accepted) + sum(1 for _, rule in result.rejected if rule == "experts")
    assert verified >= 2  # the diagnosis and the multi-hop item reach the experts
    assert all(rule in ("experts", "unique_answer") for _, rule in result.rejected)


def test_answers_sit_at_every_letter_equally_and_splits_share_no_option() -> None:
    from medxiaohe.synthesis.items import LETTERS, Item
    from medxiaohe.synthesis.pipeline import Synthesis, _split, balance_answers, split_of

    def item(node: str, options: tuple[str, ...]) -> Item:
        made = Item("definition", node, "Which term?", options, 0, ())
        made.chain["conclusion"] = f"The answer is A: {options[0]}."
        return made

    items = [item(f"n{k}", (f"a{k}", f"b{k}", f"c{k}", f"d{k}")) for k in range(40)]
    balance_answers(items, random.Random(0))
    positions = Counter(LETTERS[i.answer] for i in items)
    assert positions == dict.fromkeys(LETTERS, 10)
    for k, i in enumerate(items):
        assert i.option_ids[i.answer] == f"a{k}"  # the right option moved, not replaced
        assert i.chain["conclusion"] == f"The answer is {LETTERS[i.answer]}: a{k}."
    # a train item whose options include a held-out item's answer or distractor is dropped
    held = next(f"n{k}" for k in range(100) if split_of(item(f"n{k}", ("x",)), 0) == "heldout")
    train = next(f"n{k}" for k in range(100) if split_of(item(f"n{k}", ("x",)), 0) == "train")
    result = Synthesis(
        accepted=[
            item(held, ("p", "q", "r", "s")),
            item(train, ("t", "q", "u", "v")),  # shares the distractor q
            item(train, ("w", "x", "y", "z")),
        ]
    )
    _split(result, 0)
    assert [i.option_ids[0] for i in result.accepted] == ["p", "w"]
    assert [rule for _, rule in result.rejected] == ["split"]
    assert result.counts["split"] == Counter(heldout=1, train=1, dropped=1)
