"""Synthesis for weak nodes as a list of steps, like the corpus pipeline: generate every kind of
item that applies to each node, verify by rules, optionally let a panel of model experts vote,
then split into train and held-out: by the item's node, and no train item shares an option
(its answer or a distractor) with a held-out one. Within each split the right answer sits at
each letter equally often (the options are reordered after verification), so a constant
letter scores chance. Rejected items are kept with their rule and reason; every step counts
what it kept and dropped."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medxiaohe import __version__
from medxiaohe.models.chat import ChatParams
from medxiaohe.models.client import ModelClient
from medxiaohe.synthesis.items import GENERATORS, LETTERS, Item
from medxiaohe.synthesis.knowledge import Knowledge
from medxiaohe.synthesis.verify import RULES, verify

GENERATOR_VERSION = "1"
HELD_OUT = 0.1  # share of nodes whose items are held out


@dataclass
class Synthesis:
    accepted: list[Item] = field(default_factory=list)
    rejected: list[tuple[Item, str]] = field(default_factory=list)  # (item, rule)
    counts: dict[str, Counter[str]] = field(default_factory=dict)

    def summary(self, gap_nodes: Sequence[str]) -> dict[str, Any]:
        covered = {i.node_id for i in self.accepted}
        generated = len(self.accepted) + len(self.rejected)
        by_rule = Counter(rule for _, rule in self.rejected)
        return {
            "generated": generated,
            "accepted": len(self.accepted),
            "items_per_kind": dict(sorted(Counter(i.kind for i in self.accepted).items())),
            "rejected_by_rule": {r: by_rule.get(r, 0) for r in [*RULES, "experts", "split"]},
            "acceptance_by_rule": _acceptance(generated, by_rule),
            "nodes_covered": len(covered),
            "gap_nodes_with_items": len(covered & set(gap_nodes)),
            "gap_nodes": len(gap_nodes),
            "steps": {step: dict(counts) for step, counts in self.counts.items()},
        }


def _acceptance(generated: int, rejected: Counter[str]) -> dict[str, float]:
    """The share of the items reaching each rule that pass it, in rule order."""
    out, reaching = {}, generated
    for rule in [*RULES, "experts", "split"]:
        out[rule] = round(1 - rejected.get(rule, 0) / reaching, 4) if reaching else 1.0
        reaching -= rejected.get(rule, 0)
    return out


class ExpertPanel:
    """Several answers per item from one or more endpoints (sampled with different seeds); an
    item is kept when the majority answer is the verified one."""

    def __init__(self, clients: Sequence[ModelClient], votes: int = 3) -> None:
        self.clients = list(clients)
        self.votes = votes

    def agrees(self, item: Item, knowledge: Knowledge) -> bool:
        schema = json.dumps(
            {
                "type": "object",
                "properties": {"answer": {"enum": list(LETTERS)}},
                "required": ["answer"],
                "additionalProperties": False,
            }
        )
        answers = []
        for vote in range(self.votes):
            client = self.clients[vote % len(self.clients)]
            reply = client.chat(
                [{"role": "user", "content": item.prompt(knowledge) + "\nAnswer with a letter."}],
                params=ChatParams(max_tokens=16, temperature=0.7, seed=vote, json_schema=schema),
            )
            try:
                answers.append(json.loads(reply.text)["answer"])
            except (ValueError, KeyError):
                answers.append("")
        top, count = Counter(answers).most_common(1)[0]
        return top == LETTERS[item.answer] and count * 2 > self.votes


def held_out(node_id: str, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HELD_OUT


def synthesize(
    knowledge: Knowledge,
    nodes: Sequence[str],
    seed: int = 0,
    experts: ExpertPanel | None = None,
) -> Synthesis:
    rng = random.Random(seed)  # noqa: S311 (option order, not secrets)
    result = Synthesis()
    generated: list[Item] = []
    for node in nodes:
        for generator in GENERATORS.values():
            item = generator(knowledge, node, rng)
            if item is not None:
                generated.append(item)
    result.counts["generate"] = Counter(kept=len(generated), nodes=len(nodes))
    for item in generated:
        rule, reason = verify(item, knowledge)
        if not rule and experts is not None and not experts.agrees(item, knowledge):
            rule, reason = "experts", "the experts' majority answer differs"
        if rule:
            item.rejected = reason
            result.rejected.append((item, rule))
        else:
            result.accepted.append(item)
    result.counts["verify"] = Counter(kept=len(result.accepted), dropped=len(result.rejected))
    _split(result, seed)
    for split in ("train", "heldout"):
        balance_answers([i for i in result.accepted if split_of(i, seed) == split], rng)
    return result


def split_of(item: Item, seed: int) -> str:
    return "heldout" if held_out(item.node_id, seed) else "train"


def _split(result: Synthesis, seed: int) -> None:
    """Drop the train items that share an option with a held-out item: a held-out answer or
    distractor seen in training is no longer held out."""
    held = {o for i in result.accepted if split_of(i, seed) == "heldout" for o in i.option_ids}
    kept = []
    for item in result.accepted:
        if split_of(item, seed) == "train" and held & set(item.option_ids):
            item.rejected = "shares an option with a held-out item"
            result.rejected.append((item, "split"))
        else:
            kept.append(item)
    counts = Counter(split_of(i, seed) for i in kept)
    counts["dropped"] = len(result.accepted) - len(kept)
    result.counts["split"] = counts
    result.accepted = kept


def balance_answers(items: Sequence[Item], rng: random.Random) -> None:
    """Put the right answer at each position equally often (a shuffled cycle of positions; an
    item with fewer options takes a random one of its own)."""
    positions = [k % len(LETTERS) for k in range(len(items))]
    rng.shuffle(positions)
    for item, position in zip(items, positions, strict=True):
        if position >= len(item.option_ids):
            position = rng.randrange(len(item.option_ids))
        item.place_answer(position)


def chat_item(item: Item, knowledge: Knowledge, tree_version: str, seed: int) -> dict[str, Any]:
    """An item in OpenAI's message shape, its chain of thought in <think>, with provenance."""
    c = item.chain
    thought = (
        f"Understanding: {c['understanding']}\nKnowledge recall: {c['recall']}\n"
        f"Reasoning: {c['reasoning']}\nConclusion: {c['conclusion']}"
    )
    answer = LETTERS[item.answer]
    return {
        "messages": [
            {"role": "user", "content": item.prompt(knowledge)},
            {
                "role": "assistant",
                "content": f"<think>\n{thought}\n</think>\nThe answer is {answer}.",
            },
        ],
        "answer": answer,
        "kind": item.kind,
        "split": split_of(item, seed),
        "provenance": {
            "node_id": item.node_id,
            "path": [list(c) for c in item.claims],
            "generator_version": GENERATOR_VERSION,
            "code_version": __version__,
            "entity_tree_version": tree_version,
        },
    }
