"""The Medical Entity Tree in memory, and as a versioned artifact in the object store."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medxiaohe.common.errors import NotFound
from medxiaohe.storage import ArtifactStore, Manifest, publish, read_file, resolve

PREFIX = "met/medical-entity-tree"


@dataclass
class NodeRecord:
    """One node while the tree is being built."""

    id: str
    name: str
    parents: list[str]
    source: str
    synonyms: list[str] = field(default_factory=list)
    definition: str = ""
    rare: bool = False
    level: int = -1
    type: str = ""


@dataclass(frozen=True)
class Node:
    id: str
    name: str
    parent_ids: tuple[str, ...]
    level: int
    source: str
    type: str
    rare: bool
    definition: str
    synonyms: tuple[str, ...]


class EntityTree:
    """Nodes in column arrays (fast to load), indexed by id, with their surface forms."""

    def __init__(
        self,
        columns: dict[str, list[Any]],
        forms: dict[str, tuple[int, ...]],
        version: str,
        dropped: dict[str, int] | None = None,
    ) -> None:
        self.columns = columns
        self.ids: list[str] = columns["id"]
        self.index = {node_id: i for i, node_id in enumerate(self.ids)}
        self.forms = forms
        self.version = version
        self.dropped = dict(dropped or {})
        self._parent_index = [self.index[p[0]] if p else -1 for p in columns["parent_ids"]]

    @classmethod
    def from_records(
        cls,
        records: Sequence[NodeRecord],
        forms: dict[str, tuple[int, ...]],
        version: str = "",
        dropped: dict[str, int] | None = None,
    ) -> EntityTree:
        columns: dict[str, list[Any]] = {
            "id": [r.id for r in records],
            "name": [r.name for r in records],
            "parent_ids": [list(r.parents) for r in records],
            "level": [r.level for r in records],
            "source": [r.source for r in records],
            "type": [r.type for r in records],
            "rare": [r.rare for r in records],
            "definition": [r.definition for r in records],
            "synonyms": [list(r.synonyms) for r in records],
        }
        return cls(columns, forms, version, dropped)

    def __len__(self) -> int:
        return len(self.ids)

    def node(self, node_id: str) -> Node:
        i = self.index.get(node_id)
        if i is None:
            raise NotFound(f"no entity node {node_id!r}")
        c = self.columns
        return Node(
            c["id"][i],
            c["name"][i],
            tuple(c["parent_ids"][i]),
            c["level"][i],
            c["source"][i],
            c["type"][i],
            c["rare"][i],
            c["definition"][i],
            tuple(c["synonyms"][i]),
        )

    def path_indices(self, index: int) -> list[int]:
        """Node indices from the root down to ``index``, along primary parents."""
        path = []
        while index >= 0:
            path.append(index)
            index = self._parent_index[index]
        return path[::-1]

    def path(self, node_id: str) -> list[str]:
        return [self.ids[i] for i in self.path_indices(self.index[node_id])]

    def stats(self) -> dict[str, Any]:
        levels = Counter(self.columns["level"])
        return {
            "version": self.version,
            "nodes": len(self),
            "levels": max(levels) + 1,
            "nodes_per_level": {str(k): levels[k] for k in sorted(levels)},
            "nodes_per_source": dict(Counter(self.columns["source"]).most_common()),
            "rare_nodes": sum(self.columns["rare"]),
            "surface_forms": len(self.forms),
            "surface_forms_dropped": self.dropped,
        }

    # -- artifact -------------------------------------------------------------------------

    def save(self, store: ArtifactStore, prefix: str = PREFIX) -> Manifest:
        """Publish nodes and forms as one atomic, content-versioned artifact."""
        nodes = pa.table(self.columns)
        forms = pa.table(
            {
                "form": list(self.forms),
                "nodes": [list(v) for v in self.forms.values()],
            }
        )
        files = {
            "nodes.parquet": _parquet(nodes),
            "forms.parquet": _parquet(forms),
            "meta.json": json.dumps({"dropped": self.dropped}, sort_keys=True).encode(),
        }
        manifest = publish(store, prefix, files, metadata={"stats": self.stats() | {"version": ""}})
        self.version = manifest.version
        return manifest

    @classmethod
    def load(
        cls, store: ArtifactStore, prefix: str = PREFIX, version: str | None = None
    ) -> EntityTree:
        manifest = resolve(store, prefix, version)
        nodes = pq.read_table(io.BytesIO(read_file(store, manifest, "nodes.parquet")))
        forms = pq.read_table(io.BytesIO(read_file(store, manifest, "forms.parquet")))
        meta = json.loads(read_file(store, manifest, "meta.json"))
        columns = {name: nodes.column(name).to_pylist() for name in nodes.column_names}
        form_map = dict(
            zip(
                forms.column("form").to_pylist(),
                map(tuple, forms.column("nodes").to_pylist()),
                strict=True,
            )
        )
        return cls(columns, form_map, manifest.version, meta.get("dropped"))


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
