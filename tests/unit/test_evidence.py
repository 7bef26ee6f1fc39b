"""Passages, fusion, metrics and the evidence index (real MiniLM weights, loaded offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medxiaohe.common.errors import InvalidInput
from medxiaohe.eval.retrieval import evaluate, ndcg_at
from medxiaohe.evidence.index import EvidenceIndex, Mode
from medxiaohe.evidence.passages import Passage, chunk
from medxiaohe.evidence.retrievers import LexicalIndex, score_fusion
from medxiaohe.storage import open_store

DOCUMENT = (
    "Marfan syndrome is an autosomal dominant disorder of connective tissue. It is caused by "
    "variants in FBN1. Aortic root dilatation is the main cause of morbidity.\n\nBeta blockers "
    "slow the dilatation. Prophylactic surgery is offered above a threshold diameter. Ectopia "
    "lentis affects most patients. Pregnancy carries a risk of aortic dissection."
)


def test_chunks_round_trip_exactly_to_the_source() -> None:
    passages = chunk("doc-1", DOCUMENT, max_words=20, source="textbook", licence="CC-BY")
    assert len(passages) > 2
    for p in passages:
        assert DOCUMENT[p.start : p.end] == p.text
        assert p.source == "textbook"
        assert p.licence == "CC-BY"
    covered = {i for p in passages for i in range(p.start, p.end)}
    assert all(i in covered for i, c in enumerate(DOCUMENT) if not c.isspace())
    assert len({p.passage_id for p in passages}) == len(passages)


def test_fusion_ranks_a_passage_only_one_retriever_finds() -> None:
    fused = dict(score_fusion([{1: 9.0, 2: 8.0, 3: 1.0}, {2: 0.9, 4: 0.7, 5: 0.1}]))
    assert set(fused) == {1, 2, 3, 4, 5}
    assert fused[2] > fused[1] > fused[4] > 0  # found by both > best of one > found by one only
    assert fused[3] == 0.0  # the lexical minimum and absent from dense


def test_metrics() -> None:
    assert ndcg_at(["a", "b"], {"a": 1}, 10) == 1.0
    assert round(ndcg_at(["x", "a"], {"a": 1}, 10), 4) == 0.6309
    result = evaluate({"q": ["x", "a"]}, {"q": {"a": 1}})
    assert result == {"ndcg@10": 0.6309, "recall@10": 1.0, "recall@100": 1.0}


@pytest.fixture(scope="module")
def index() -> EvidenceIndex:
    passages = chunk("marfan", DOCUMENT, max_words=25, source="textbook")
    passages.append(
        Passage(
            "dm#1",
            "dm",
            "Metformin is the first-line drug for type 2 diabetes.",
            0,
            54,
            source="guideline",
            entity_ids=["ICD10CM:E11"],
        )
    )
    passages.append(
        Passage(
            "flu#1",
            "flu",
            "Influenza vaccination is recommended every autumn.",
            0,
            49,
            source="guideline",
        )
    )
    return EvidenceIndex.build(passages)


def test_hybrid_search_with_filters(index: EvidenceIndex) -> None:
    hits = index.search("What drug should a type 2 diabetic start with?", 3)
    assert hits[0].passage.passage_id == "dm#1"
    # the dense retriever alone finds this one: no query word occurs in it
    dense_only = index.search("jab against the seasonal flu", 3, Mode.DENSE)
    assert dense_only[0].passage.passage_id == "flu#1"
    assert index.search("jab against the seasonal flu", 3, Mode.LEXICAL) == []
    assert index.search("jab against the seasonal flu", 3)[0].passage.passage_id == "flu#1"
    only = index.search("aortic surgery", 5, sources=["guideline"])
    assert {h.passage.source for h in only} == {"guideline"}
    assert [h.passage.passage_id for h in index.search("drug", 5, entity_ids=["ICD10CM:E11"])] == [
        "dm#1"
    ]


@pytest.mark.parametrize(("query", "k"), [("", 5), ("fever", 0), ("fever", 101)])
def test_bad_requests(index: EvidenceIndex, query: str, k: int) -> None:
    with pytest.raises(InvalidInput):
        index.search(query, k)


def test_short_texts_embed_as_sentence_transformers_embeds_them() -> None:
    from medxiaohe.evidence.retrievers import embed, embed_short

    texts = ["fever", "aortic root dilatation in Marfan syndrome", "lens luxation " * 200]
    assert np.allclose(embed_short(texts), embed(texts), atol=1e-5)  # long ones truncated alike
    cosines = (embed_short(texts, bf16=True) * embed(texts)).sum(axis=1)
    assert cosines.min() > 0.999, cosines  # bfloat16 matrix products: the same direction


def test_queries_are_encoded_in_batches_and_repeated_ones_from_the_cache() -> None:
    from concurrent.futures import wait

    from medxiaohe.evidence.retrievers import QueryBatcher, embed

    # one thread: batches finish in the order they were sent, so the cache keeps the last two
    # (with two, a batch holding the first query could finish last and evict the third)
    batcher = QueryBatcher(threads=1, cache_size=2, bf16=False)
    queries = ["fever and cough", "aortic root dilatation", "lens luxation"]
    futures = [batcher.submit(q) for q in queries]
    wait(futures, timeout=120)
    for query, future in zip(queries, futures, strict=True):
        assert np.allclose(future.result(), embed([query])[0], atol=1e-5)
    again = batcher.submit("lens luxation")
    assert again.done()  # answered from the cache, no batch
    assert (batcher.hits, batcher.misses) == (1, 3)
    assert batcher.submit("fever and cough").result(timeout=120) is not None  # evicted: encoded
    assert batcher.misses == 4


def test_an_index_of_no_searchable_word_is_refused_clearly() -> None:
    """bm25s fails (ValueError, an INTERNAL error over gRPC) on an empty vocabulary; the fuzzer
    found it with passages of stopwords and symbols."""
    with pytest.raises(InvalidInput, match="no passage has a searchable word"):
        LexicalIndex.build(["the", "%s%n", "*"])


def test_artifact_round_trip(index: EvidenceIndex, tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    manifest = index.save(store, "unit")
    loaded = EvidenceIndex.load(store, "unit")
    assert loaded.version == manifest.version
    query = "dissection in pregnancy"
    assert [h.passage.passage_id for h in loaded.search(query, 3)] == [
        h.passage.passage_id for h in index.search(query, 3)
    ]
    assert loaded.passage("dm#1") is not None
    assert loaded.passage("nope") is None


def test_two_shards_answer_like_one_index() -> None:
    import random

    from medxiaohe.corpus.samples import NOTES
    from medxiaohe.evidence.sharding import ShardedIndex, split

    rng = random.Random(3)
    words = " ".join([*NOTES.values(), DOCUMENT]).split()
    passages = [
        Passage(
            f"p{i}",
            f"d{i}",
            " ".join(rng.choice(words) for _ in range(25)),
            0,
            1,
            source=f"s{i % 3}",
        )
        for i in range(240)
    ]
    whole = EvidenceIndex.build(passages)
    sharded = ShardedIndex(split(whole, 2))
    for query in (
        "pneumonia with fever",
        "aortic dilatation in Marfan",
        "beta blockers",
        "diabetes",
    ):
        for mode in Mode:
            expected = [
                (h.passage.passage_id, round(h.score, 6)) for h in whole.search(query, 10, mode)
            ]
            assert [
                (h.passage.passage_id, round(h.score, 6)) for h in sharded.search(query, 10, mode)
            ] == expected
        filtered = [h.passage.passage_id for h in whole.search(query, 5, sources=["s1"])]
        assert [h.passage.passage_id for h in sharded.search(query, 5, sources=["s1"])] == filtered


def test_passages_are_tagged_with_met_nodes() -> None:
    from medxiaohe.entities.build import build_tree
    from medxiaohe.entities.tagger import DictionaryTagger
    from medxiaohe.evidence.passages import tag_passages
    from tests.conftest import small_records

    passages = [Passage("a", "a", "Fever and seizures; no pneumonia.", 0, 33, entity_ids=["X:1"])]
    tag_passages(passages, DictionaryTagger(build_tree(small_records())))
    assert passages[0].entity_ids == [
        "HP:0001250",
        "HP:0001945",
        "X:1",
    ]  # negated pneumonia left out


def test_a_killed_build_resumes_from_its_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medxiaohe.evidence import build

    passages = chunk("marfan", DOCUMENT * 6, max_words=20)
    monkeypatch.setattr(build, "BATCH", 4)
    embedded: list[int] = []
    real_embed = build.embed

    def counting_embed(texts: list[str]) -> object:  # a spy: it still embeds for real
        embedded.append(len(texts))
        return real_embed(texts)

    monkeypatch.setattr(build, "embed", counting_embed)
    store = open_store(str(tmp_path / "store"))

    def die_after_two(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build.build_index(store, "resume", passages, die_after_two)
    assert len(embedded) == 2
    manifest = build.build_index(store, "resume", passages)
    batches = -(-len(passages) // 4)
    assert len(embedded) == batches  # the two finished batches were not embedded again
    assert EvidenceIndex.load(store, "resume").version == manifest.version
    assert not [o.key for o in store.list("evidence/resume/_build/")]  # checkpoints cleaned up


def test_an_unreadable_hnsw_graph_is_rebuilt_from_the_vectors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import numpy as np

    from medxiaohe.evidence.retrievers import DenseIndex, _build_hnsw

    vectors = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    saved = DenseIndex(vectors, _build_hnsw(vectors))
    ann = saved.ann_bytes()
    assert ann is not None
    loaded = DenseIndex.from_bytes(saved.to_bytes(), ann)
    assert "rebuilding" not in caplog.text
    # a graph in another layout (upstream hnswlib's, or a damaged one) is rebuilt, not fatal
    rebuilt = DenseIndex.from_bytes(saved.to_bytes(), b"\0" * 64 + ann[64:])
    assert "rebuilding it from the vectors" in caplog.text
    for index in (loaded, rebuilt):
        assert index.ann is not None
        assert index.search(vectors[7], 1)[0].tolist() == [7]
