"""A published mixture as a PyTorch iterable for the CPT stage: each rank (and each DataLoader
worker within it) reads its own share of the stream, and a resumed job starts at the record
offset its checkpoint recorded."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from medxiaohe.mixture.artifact import iter_mixture, mixture_prefix
from medxiaohe.storage import ArtifactStore, resolve


class MixtureDataset(IterableDataset[dict[str, Any]]):
    def __init__(
        self,
        store: ArtifactStore,
        name: str,
        version: str = "",
        *,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        start: int = 0,
    ) -> None:
        self.store = store
        self.manifest = resolve(store, mixture_prefix(name), version or None)
        self.rank, self.world, self.seed, self.start = rank, world, seed, start

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Worker ``w`` of ``n`` in rank ``r`` reads stream position ``r * n + w`` of
        ``world * n``; ``start`` counts this rank's records, split evenly over its workers."""
        worker = get_worker_info()
        workers, index = (worker.num_workers, worker.id) if worker else (1, 0)
        skip = self.start // workers + (index < self.start % workers)
        yield from iter_mixture(
            self.store,
            self.manifest,
            rank=self.rank * workers + index,
            world=self.world * workers,
            seed=self.seed,
            start=skip,
        )
