"""CoNLL reading and entity-level scoring."""

from __future__ import annotations

from pathlib import Path

import pytest

from medxiaohe.common.errors import InvalidInput
from medxiaohe.datasets.conll import Sentence, gold_spans, read_conll
from medxiaohe.eval.tagging import evaluate, to_token_spans


def test_gold_spans_from_iob() -> None:
    tags = ["O", "B-Disease", "I-Disease", "O", "B-Chemical", "B-Disease", "I-Chemical"]
    assert gold_spans(tags) == {
        (1, 3, "Disease"),
        (4, 5, "Chemical"),
        (5, 6, "Disease"),
        (6, 7, "Chemical"),
    }


def test_char_spans_map_onto_tokens() -> None:
    sentence = Sentence(["Tay", "-", "Sachs", "disease", "."], ["B-D", "I-D", "I-D", "I-D", "O"])
    assert sentence.text == "Tay - Sachs disease ."
    assert to_token_spans(sentence, [(0, 19, "D")]) == {(0, 4, "D")}


def test_exact_match_scoring(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_text("Breast\tB-Disease\ncancer\tI-Disease\nand\tO\nfever\tB-Disease\n\nno\tO\n")
    sentences = list(read_conll(path))

    def predict(text: str) -> list[tuple[int, int, str]]:
        # one exact hit, one partial ("cancer" only): precision 1/2, recall 1/2
        return (
            [(text.index("fever"), text.index("fever") + 5, "Disease"), (7, 13, "Disease")]
            if "fever" in text
            else []
        )

    result = evaluate(sentences, predict)
    assert result["precision"] == 0.5
    assert result["recall"] == 0.5
    assert result["support"] == 2


def test_malformed_conll_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("token-without-tag\n")
    with pytest.raises(InvalidInput, match=r"bad\.tsv:1"):
        list(read_conll(path))
