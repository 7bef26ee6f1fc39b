"""The entity-balanced mixture over shards written by the corpus pipeline: deterministic with a
seed, quotas held, the long tail up-weighted as the boost rises, bounded memory on a corpus
larger than the limit, and a reader that shards across ranks and resumes at an offset."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from medxiaohe.common.errors import InvalidInput
from medxiaohe.entities.build import build_tree
from medxiaohe.entities.tree import EntityTree
from medxiaohe.mixture.artifact import iter_mixture, load_stats, publish_mixture
from medxiaohe.mixture.sampler import MixtureConfig, build_mixture, expected_copies
from medxiaohe.mixture.weights import WeightConfig
from medxiaohe.storage import ArtifactStore, open_store
from tests.conftest import small_records, write_corpus


@pytest.fixture(scope="module")
def tree() -> EntityTree:
    return build_tree(small_records())


@pytest.fixture(scope="module")
def store(tree: EntityTree, tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    store = open_store(str(tmp_path_factory.mktemp("store")))
    write_corpus(store, tree, shards=4, per_shard=250)
    return store


def test_the_long_tail_rises_with_the_boost_and_the_seed_fixes_the_draw(
    store: ArtifactStore, tree: EntityTree
) -> None:
    def build(**weights: object) -> dict[str, object]:
        config = MixtureConfig(3000, WeightConfig(**weights), seed=3)  # type: ignore[arg-type]
        return build_mixture(store, tree, ["corpus"], config).report()

    natural = build(temperature=1.0, rare_boost=1.0, weak_boost=1.0, floor=1.0, combine="max")
    balanced = build()
    boosted = build(rare_boost=16.0)
    assert natural["balanced"] == natural["uniform"]  # no entity weighting: the natural draw
    tail = [r["balanced"]["long_tail_share"] for r in (natural, balanced, boosted)]
    assert tail[0] < tail[1] < tail[2]
    assert balanced["ratios"]["long_tail_share"] > 2
    for report in (natural, balanced):
        assert abs(report["balanced"]["tokens"] - 3000) < 300  # the budget, give or take draws
        assert report["balanced"]["tokens_per_type"]["none"] > 0  # general text kept (floor)
    assert build() == balanced  # the same seed, the same mixture


def test_quotas_hold_and_repeats_are_capped(store: ArtifactStore, tree: EntityTree) -> None:
    config = MixtureConfig(3000, quotas={"abstracts": 0.5}, max_repeats=2, seed=1)
    report = build_mixture(store, tree, ["corpus"], config).report()["balanced"]
    share = report["tokens_per_source"]["abstracts"] / report["tokens"]
    assert share == pytest.approx(0.5, abs=0.05)
    capped = expected_copies(np.array([1.0, 100.0]), np.array([10.0, 10.0]), 30, 2)
    assert capped.tolist() == pytest.approx([1.0, 2.0], abs=1e-6)  # the heavy one at its cap
    with pytest.raises(InvalidInput, match="quota for sources with no records"):
        build_mixture(store, tree, ["corpus"], MixtureConfig(100, quotas={"web": 0.2}))
    with pytest.raises(InvalidInput, match="add up to at most 1"):
        MixtureConfig(100, quotas={"notes": 0.7, "abstracts": 0.7})


def test_the_reader_shards_across_ranks_and_resumes(store: ArtifactStore, tree: EntityTree) -> None:
    mixture = build_mixture(store, tree, ["corpus"], MixtureConfig(2000, seed=2))
    manifest = publish_mixture(store, "test", mixture, ["corpus"], tree.version)
    assert load_stats(store, manifest) == mixture.report()
    everything = [r["id"] for r in iter_mixture(store, manifest, seed=5)]
    assert len(everything) == sum(r["repeats"] for r in _refs(mixture))
    ranks = [
        [r["id"] for r in iter_mixture(store, manifest, rank=k, world=2, seed=5)] for k in (0, 1)
    ]
    assert sorted(ranks[0] + ranks[1]) == sorted(everything)
    resumed = [r["id"] for r in iter_mixture(store, manifest, rank=1, world=2, seed=5, start=7)]
    assert resumed == ranks[1][7:]
    assert publish_mixture(store, "test", mixture, ["corpus"], tree.version) == manifest


def test_memory_stays_bounded_on_a_corpus_larger_than_the_limit(
    tree: EntityTree, tmp_path: Path
) -> None:
    """Python's allocations while building stay below a limit that the corpus's text exceeds
    several times (one shard is read at a time; a record leaves three numbers behind)."""
    store = open_store(str(tmp_path))
    write_corpus(store, tree, shards=16, per_shard=300, pad=400)
    texts = 16 * 300 * len("word " * 400)  # about 9.6 MB
    limit = 4 << 20
    tracemalloc.start()
    try:
        build_mixture(store, tree, ["corpus"], MixtureConfig(50_000, seed=0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert texts > 2 * limit
    assert peak < limit, f"peak {peak / 2**20:.1f} MiB"


def _refs(mixture: object) -> list[dict[str, object]]:
    from medxiaohe.mixture.sampler import iter_samples

    return list(iter_samples(mixture.parts))  # type: ignore[attr-defined]


def test_the_torch_dataset_splits_over_dataloader_workers(
    store: ArtifactStore, tree: EntityTree
) -> None:
    from torch.utils.data import DataLoader

    from medxiaohe.training.mixture_data import MixtureDataset

    mixture = build_mixture(store, tree, ["corpus"], MixtureConfig(1500, seed=4))
    publish_mixture(store, "torch", mixture, ["corpus"], tree.version)
    alone = [r["id"] for r in MixtureDataset(store, "torch", seed=9)]
    loader = DataLoader(MixtureDataset(store, "torch", seed=9), batch_size=None, num_workers=2)
    together = [r["id"] for r in loader]
    assert sorted(together) == sorted(alone)
    assert len(alone) == sum(r["repeats"] for r in _refs(mixture))
