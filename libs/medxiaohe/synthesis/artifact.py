"""Synthesized items as a versioned artifact, ``synthesis/<name>/<version>``: train and
held-out items (split by node), the rejected ones with their rule and reason, and the figures."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.storage import ArtifactStore, Manifest, publish
from medxiaohe.synthesis.knowledge import Knowledge
from medxiaohe.synthesis.pipeline import Synthesis, chat_item

PREFIX = "synthesis"


def _jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()


def publish_synthesis(
    store: ArtifactStore,
    name: str,
    synthesis: Synthesis,
    knowledge: Knowledge,
    gap_nodes: Sequence[str],
    tree_version: str,
    seed: int,
) -> Manifest:
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise InvalidInput("a synthesis name has letters, digits, '-', '_' or '.'")
    items = [chat_item(i, knowledge, tree_version, seed) for i in synthesis.accepted]
    rejected = [
        chat_item(i, knowledge, tree_version, seed) | {"rule": rule, "reason": i.rejected}
        for i, rule in synthesis.rejected
    ]
    files = {
        "train.jsonl": _jsonl([i for i in items if i["split"] == "train"]),
        "heldout.jsonl": _jsonl([i for i in items if i["split"] == "heldout"]),
        "rejected.jsonl": _jsonl(rejected),
        "stats.json": json.dumps(synthesis.summary(gap_nodes), sort_keys=True).encode(),
    }
    return publish(store, f"{PREFIX}/{name}", files)
