"""Coverage of the Medical Entity Tree: mentions per node and source, rolled up the tree, the
gap report (zero or few mentions, rare diseases first), and a PNG plot by level and source."""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medxiaohe.corpus.record import Record
    from medxiaohe.entities.tree import EntityTree


class CoverageCounts:
    """(source, node id) -> [mentions, documents]; merged across shards."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, list[int]]] = defaultdict(dict)

    def add(self, record: Record) -> None:
        per_node = Counter(m.node_id for m in record.mentions if m.node_id)
        table = self.counts[record.source]
        for node_id, mentions in per_node.items():
            entry = table.setdefault(node_id, [0, 0])
            entry[0] += mentions
            entry[1] += 1

    def merge(self, other: CoverageCounts) -> None:
        for source, table in other.counts.items():
            mine = self.counts[source]
            for node_id, (mentions, documents) in table.items():
                entry = mine.setdefault(node_id, [0, 0])
                entry[0] += mentions
                entry[1] += documents

    def to_json(self) -> bytes:
        return json.dumps(self.counts, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CoverageCounts:
        coverage = cls()
        for source, table in json.loads(data).items():
            coverage.counts[source] = {k: list(v) for k, v in table.items()}
        return coverage


@dataclass(frozen=True)
class NodeCoverage:
    node_id: str
    name: str
    level: int
    mentions: int
    rolled_up_mentions: int
    documents: int
    rare: bool

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class Coverage:
    """Counts laid onto a tree: own and rolled-up mentions for every node."""

    def __init__(self, tree: EntityTree, counts: CoverageCounts, source: str = "") -> None:
        self.tree = tree
        n = len(tree)
        self.mentions = [0] * n
        self.documents = [0] * n
        self.rolled = [0] * n
        for src, table in counts.counts.items():
            if source and src != source:
                continue
            for node_id, (mentions, documents) in table.items():
                index = tree.index.get(node_id)
                if index is None:
                    continue  # a node of another tree version
                self.mentions[index] += mentions
                self.documents[index] += documents
        for index, mentions in enumerate(self.mentions):
            if mentions:
                for ancestor in tree.path_indices(index):
                    self.rolled[ancestor] += mentions

    def node(self, index: int) -> NodeCoverage:
        c = self.tree.columns
        return NodeCoverage(
            c["id"][index],
            c["name"][index],
            c["level"][index],
            self.mentions[index],
            self.rolled[index],
            self.documents[index],
            c["rare"][index],
        )

    def subtree(self, node_id: str, depth: int) -> list[NodeCoverage]:
        """The node and its descendants down to ``depth`` levels below it (primary parents)."""
        root = self.tree.index[node_id] if node_id else 0
        children: dict[int, list[int]] = defaultdict(list)
        for index, parents in enumerate(self.tree.columns["parent_ids"]):
            if parents:
                children[self.tree.index[parents[0]]].append(index)
        out, frontier = [root], [root]
        for _ in range(depth):
            frontier = [c for f in frontier for c in children[f]]
            out.extend(frontier)
        return [self.node(i) for i in out]

    def gaps(
        self,
        min_mentions: int = 1,
        limit: int = 100,
        rare_only: bool = False,
        entity_type: str = "",
    ) -> list[tuple[NodeCoverage, list[str], str]]:
        """Nodes below ``min_mentions`` rolled-up mentions: rare first, then fewest mentions,
        then nearest the root (a whole missing branch before its leaves)."""
        c = self.tree.columns
        candidates = [
            i
            for i in range(len(self.tree))
            if c["level"][i] >= 2
            and self.rolled[i] < min_mentions
            and (not rare_only or c["rare"][i])
            and (not entity_type or c["type"][i] == entity_type)
        ]
        candidates.sort(key=lambda i: (not c["rare"][i], self.rolled[i], c["level"][i], c["id"][i]))
        result = []
        for i in candidates[:limit]:
            reason = (
                "no mentions"
                if self.rolled[i] == 0
                else f"{self.rolled[i]} < {min_mentions} mentions"
            )
            result.append(
                (
                    self.node(i),
                    [self.tree.ids[p] for p in self.tree.path_indices(i)],
                    ("rare disease, " if c["rare"][i] else "") + reason,
                )
            )
        return result

    def summary(self) -> dict[str, dict[str, float]]:
        """Share of nodes with at least one rolled-up mention, by level and by source."""
        c = self.tree.columns
        by_level: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        by_source: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for i in range(len(self.tree)):
            by_level[str(c["level"][i])][0] += self.rolled[i] > 0
            by_level[str(c["level"][i])][1] += 1
            if c["source"][i] != "MET":  # the scaffold is not a vocabulary
                by_source[c["source"][i]][0] += self.rolled[i] > 0
                by_source[c["source"][i]][1] += 1
        return {
            "by_level": {
                k: round(a / b, 4)
                for k, (a, b) in sorted(by_level.items(), key=lambda kv: int(kv[0]))
            },
            "by_source": {k: round(a / b, 4) for k, (a, b) in sorted(by_source.items())},
        }

    def plot_png(self) -> bytes:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        summary = self.summary()
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        levels = summary["by_level"]
        left.bar(list(levels), [100 * v for v in levels.values()], color="#3b7dd8")
        left.set(title="Entity tree nodes covered, by level", xlabel="level", ylabel="% of nodes")
        for axis in (left, right):  # a young corpus covers a sliver: show it on a log scale
            axis.set_yscale("symlog", linthresh=0.01)
            axis.set_ylim(0, 100)
        sources = summary["by_source"]
        right.bar(list(sources), [100 * v for v in sources.values()], color="#d8843b")
        right.set(title="Nodes covered, by vocabulary", ylabel="% of nodes")
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=100)
        plt.close(fig)
        return out.getvalue()
