"""The small model's data and measures: training text never holds the held-out text, the
official VQA-RAD test split, and the answer extraction and perplexity the figures use."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from medxiaohe.corpus import public as corpus_public
from medxiaohe.datasets import iu_xray
from medxiaohe.eval.lm import perplexity, short_answer
from medxiaohe.training import public_data as public

DATA = Path(__file__).parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(
    not (DATA / corpus_public.IU_XRAY).is_file(), reason=f"{DATA} is absent: the shared data sets"
)


def test_short_answers_compare_without_case_or_punctuation() -> None:
    assert short_answer(" Yes.") == "yes"
    assert short_answer("No!") == "no"
    assert short_answer("left lung") == "left lung"


def test_perplexity_is_the_exponent_of_the_mean_token_loss(tmp_path: Path) -> None:
    import torch

    from medxiaohe.models.tiny import build_tiny
    from medxiaohe.models.vlm import load_vlm

    vlm = load_vlm(build_tiny("qwen2_vl", tmp_path / "tiny", seed=0))
    tokenizer = vlm.processor.tokenizer
    text = "The lungs are clear. No pleural effusion."
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = float(vlm.model(input_ids=ids, labels=ids).loss)
    assert perplexity(vlm.model, tokenizer, [text]) == pytest.approx(math.exp(loss), rel=1e-5)
    assert perplexity(vlm.model, tokenizer, ["."]) == math.inf  # nothing to predict


@needs_data
def test_training_text_holds_no_held_out_text() -> None:
    from medxiaohe.entities.build import build_tree
    from tests.conftest import small_records

    documents = list(corpus_public.cpt_documents(DATA, build_tree(small_records())))
    ids = {d["id"] for d in documents}
    val = {f"iu-{r['uid']}" for r in iu_xray.reports(DATA / "iu_xray", "val")}
    train = {f"iu-{r['uid']}" for r in iu_xray.reports(DATA / "iu_xray", "train")}
    assert val
    assert train <= ids
    assert not val & ids
    # by text, not only by id: IU X-ray's templated normal reports recur across its splits,
    # but no NCBI devel abstract is in the training text
    texts = {d["text"] for d in documents}
    assert not texts & set(corpus_public.heldout_texts(DATA)["ncbi_devel"])
    assert {d["source"] for d in documents} >= {"ncbi-disease", "bc5cdr", "scifact", "iu-xray"}


@needs_data
def test_vqa_rad_splits_follow_the_official_test_set() -> None:
    train, test = public.vqa_rad(DATA)
    assert len(test) == 451  # test_freeform + test_para
    assert sum(r["answer_type"] == "CLOSED" for r in test) == 272
    assert not {r["qid"] for r in train} & {r["qid"] for r in test}
    assert all(Path(r["image_path"]).is_file() for r in test[:20])
