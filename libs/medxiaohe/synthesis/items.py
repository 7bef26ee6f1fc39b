"""Questions whose answers follow from a path of facts, each with a four-stage chain of thought
written from that path (understanding, knowledge recall, reasoning, conclusion).

- *diagnosis*: a disease from three of its most telling phenotypes; the distractors share some
  of them, not all (hard negatives);
- *multi-hop*: disease -> phenotype (masked: given by its definition) -> ... -> organ-system
  category, at least three hops;
- *definition*: the term a definition defines, among its siblings;
- *classification*: the category a node sits under, among its parent's siblings."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import pairwise

from medxiaohe.synthesis.knowledge import (
    HAS_PHENOTYPE,
    IS_A,
    PHENOTYPE_ROOT,
    Knowledge,
    specificity,
)

LETTERS = "ABCD"
KINDS = ("diagnosis", "multi_hop", "definition", "classification")
Claim = tuple[str, str, str, bool]  # (subject, relation, object, holds)


@dataclass
class Item:
    kind: str
    node_id: str  # the weak node the item is for
    question: str
    option_ids: tuple[str, ...]
    answer: int  # position of the right option
    claims: tuple[Claim, ...]  # every fact the chain of thought states
    stated: tuple[str, ...] = ()  # what the question gives (phenotype ids, a definition's node)
    masked: tuple[str, ...] = ()  # entities on the path the question must not name
    chain: dict[str, str] = field(default_factory=dict)
    rejected: str = ""

    def options(self, knowledge: Knowledge) -> list[str]:
        return [knowledge.names[i] for i in self.option_ids]

    def place_answer(self, position: int) -> None:
        """Move the right option to ``position`` (the others keep their order) and say so in
        the conclusion."""
        if not 0 <= position < len(self.option_ids):
            raise ValueError(f"no option position {position}")
        right = self.option_ids[self.answer]
        others = [o for k, o in enumerate(self.option_ids) if k != self.answer]
        self.option_ids = (*others[:position], right, *others[position:])
        old, self.answer = LETTERS[self.answer], position
        if "conclusion" in self.chain:
            self.chain["conclusion"] = self.chain["conclusion"].replace(
                f"The answer is {old}:", f"The answer is {LETTERS[position]}:", 1
            )

    def prompt(self, knowledge: Knowledge) -> str:
        lines = [f"{LETTERS[i]}. {name}" for i, name in enumerate(self.options(knowledge))]
        return f"{self.question}\n" + "\n".join(lines)


def _say(knowledge: Knowledge, claim: Claim) -> str:
    subject, relation, obj, holds = claim
    s, o = knowledge.names[subject], knowledge.names[obj]
    if relation == HAS_PHENOTYPE:
        return f"{s} {'has' if holds else 'is not annotated with'} {o}."
    return f"{s} {'is a kind of' if holds else 'is not classified under'} {o}."


def _chain(knowledge: Knowledge, item: Item, understanding: str, reasoning: str) -> None:
    answer = item.option_ids[item.answer]
    item.chain = {
        "understanding": understanding,
        "recall": " ".join(_say(knowledge, c) for c in item.claims),
        "reasoning": reasoning,
        "conclusion": f"The answer is {LETTERS[item.answer]}: {knowledge.names[answer]}.",
    }


def _options(
    rng: random.Random, answer: str, distractors: list[str]
) -> tuple[tuple[str, ...], int]:
    options = [answer, *distractors[:3]]
    rng.shuffle(options)
    return tuple(options), options.index(answer)


def diagnosis(knowledge: Knowledge, disease: str, rng: random.Random) -> Item | None:
    terms = specificity(knowledge, sorted(knowledge.phenotypes.get(disease, ())))[:3]
    if len(terms) < 3:
        return None
    overlap: dict[str, int] = {}
    for term in terms:
        for other in knowledge.diseases_with[term]:
            if other != disease:
                overlap[other] = overlap.get(other, 0) + 1
    hard = sorted((d for d, n in overlap.items() if n < 3), key=lambda d: (-overlap[d], d))
    if len(hard) < 3:
        return None
    options, answer = _options(rng, disease, hard)
    claims: list[Claim] = [(disease, HAS_PHENOTYPE, t, True) for t in terms]
    for other in options:
        if other != disease:
            lacking = next(t for t in terms if t not in knowledge.phenotypes[other])
            claims.append((other, HAS_PHENOTYPE, lacking, False))
    names = ", ".join(knowledge.names[t] for t in terms)
    item = Item(
        "diagnosis",
        disease,
        f"A patient presents with {names}. Which disease has all three of these features?",
        options,
        answer,
        tuple(claims),
        stated=tuple(terms),
    )
    _chain(
        knowledge,
        item,
        f"The question gives three phenotypes ({names}) and asks which option has them all.",
        "Each other option lacks at least one of the three, so only one option remains.",
    )
    return item


def multi_hop(knowledge: Knowledge, disease: str, rng: random.Random) -> Item | None:
    categories = sorted(knowledge.children[PHENOTYPE_ROOT])
    for term in specificity(knowledge, sorted(knowledge.phenotypes.get(disease, ()))):
        definition = knowledge.definitions.get(term, "")
        category = knowledge.category(term)
        path = knowledge.lineage(term)
        if not definition or not category or path.index(category) < 2 or len(categories) < 4:
            continue
        others = [c for c in categories if c != category]
        rng.shuffle(others)
        options, answer = _options(rng, category, others)
        steps = path[: path.index(category) + 1]
        claims: list[Claim] = [(disease, HAS_PHENOTYPE, term, True)]
        claims += [(a, IS_A, b, True) for a, b in pairwise(steps)]
        item = Item(
            "multi_hop",
            disease,
            f'{knowledge.names[disease]} is annotated with a phenotype defined as "{definition}". '
            "Which organ-system category does that phenotype belong to?",
            options,
            answer,
            tuple(claims),
            stated=(term,),
            masked=tuple(steps),
        )
        _chain(
            knowledge,
            item,
            "The question names a disease and defines one of its phenotypes without naming it.",
            f"The definition is that of {knowledge.names[term]}; following its parents up "
            f"{len(steps) - 1} levels reaches the category.",
        )
        return item
    return None


def definition(knowledge: Knowledge, node: str, rng: random.Random) -> Item | None:
    text = knowledge.definitions.get(node, "")
    parents = knowledge.parents.get(node, ())
    if not text or not parents:
        return None
    siblings = [s for s in knowledge.children[parents[0]] if s != node]
    if len(siblings) < 3:
        return None
    rng.shuffle(siblings)
    options, answer = _options(rng, node, siblings)
    claims = tuple((o, IS_A, parents[0], True) for o in options)
    item = Item(
        "definition",
        node,
        f'Which term is defined as: "{text}"?',
        options,
        answer,
        claims,
        stated=(node,),
        masked=(node,),
    )
    _chain(
        knowledge,
        item,
        f"All four options are kinds of {knowledge.names[parents[0]]}; one matches the definition.",
        "Only one option has this definition.",
    )
    return item


def classification(knowledge: Knowledge, node: str, rng: random.Random) -> Item | None:
    parents = knowledge.parents.get(node, ())
    grand = knowledge.parents.get(parents[0], ()) if parents else ()
    if not grand:
        return None
    others = [p for p in knowledge.children[grand[0]] if p not in parents]
    if len(others) < 3:
        return None
    rng.shuffle(others)
    options, answer = _options(rng, parents[0], others)
    claims: list[Claim] = [(node, IS_A, parents[0], True)]
    claims += [(node, IS_A, o, False) for o in options if o != parents[0]]
    item = Item(
        "classification",
        node,
        f"Under which category is {knowledge.names[node]} classified?",
        options,
        answer,
        tuple(claims),
        masked=(parents[0],),
    )
    _chain(
        knowledge,
        item,
        f"The question asks for the parent category of {knowledge.names[node]}.",
        "Exactly one option is its parent in the hierarchy.",
    )
    return item


GENERATORS = {
    "diagnosis": diagnosis,
    "multi_hop": multi_hop,
    "definition": definition,
    "classification": classification,
}
