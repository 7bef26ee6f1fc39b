"""Normalization, tree building and tagging on a small hand-made tree (no vocabulary load)."""

from __future__ import annotations

import pytest

from medxiaohe.entities.build import ROOT, build_tree
from medxiaohe.entities.context import Assertion
from medxiaohe.entities.forms import drop_reason
from medxiaohe.entities.normalize import normalize_term, normalize_text, plural_variants, uninvert
from medxiaohe.entities.tagger import DictionaryTagger
from tests.conftest import small_records


@pytest.fixture(scope="module")
def tagger() -> DictionaryTagger:
    return DictionaryTagger(build_tree(small_records(), version="test"))


def test_text_normalization_keeps_offsets() -> None:
    text = "Type-2 Diabetes, COPD/asthma; Sjögren"
    norm = normalize_text(text)
    assert len(norm) == len(text)
    assert norm == "type 2 diabetes  copd asthma  sjogren"


def test_term_normalization_and_variants() -> None:
    assert (
        normalize_term("  Type-2 Diabetes Mellitus (disorder) ")
        == "type 2 diabetes mellitus disorder"
    )
    assert uninvert("Diabetes mellitus, type 2") == "type 2 Diabetes mellitus"
    assert uninvert("A, B, C") is None
    assert plural_variants("seizure") == ["seizures"]
    assert plural_variants("seizures") == ["seizure"]
    assert plural_variants("artery") == ["arteries"]
    assert plural_variants("diseases") == ["disease"]
    assert plural_variants("abscesses") == ["abscess"]
    assert plural_variants("type 2") == []


@pytest.mark.parametrize(
    ("form", "reason"),
    [
        ("12 3", "no_letters"),
        ("ab", "shorter_than_3"),
        ("all", "short_single_token"),
        ("disease", "common_or_generic_word"),
        ("copd", None),
        ("marfan syndrome", None),
    ],
)
def test_drop_rules(form: str, reason: str | None) -> None:
    assert drop_reason(form) == reason


def test_tree_levels_types_paths_and_forms(tagger: DictionaryTagger) -> None:
    tree = tagger.tree
    stats = tree.stats()
    assert stats["levels"] == 6
    assert stats["nodes"] == 14
    assert tree.path("ICD10CM:E11.9") == [
        ROOT,
        "MET:disease",
        "ICD10CM:chapter-04",
        "ICD10CM:E08-E13",
        "ICD10CM:E11",
        "ICD10CM:E11.9",
    ]
    assert tree.node("HP:0001250").type == "phenotype"
    assert tree.node("ORPHA:558").rare
    # qualifier stripped ("without complications"), the category named first
    assert next(tree.ids[i] for i in tree.forms["type 2 diabetes mellitus"]) == "ICD10CM:E11"
    assert "pneumonia" in tree.forms
    assert "seizures" in tree.forms
    assert "abnormality" not in tree.forms
    assert stats["surface_forms_dropped"]["common_or_generic_word"] >= 1


def test_spans_are_exact_longest_and_on_token_boundaries(tagger: DictionaryTagger) -> None:
    text = "Type-2 diabetes mellitus with feverish seizures; COPD. Abdominal pain and fever."
    mentions = tagger.tag(text, assertions=False)
    assert [(m.text, m.node_id) for m in mentions] == [
        ("Type-2 diabetes mellitus", "ICD10CM:E11"),
        ("seizures", "HP:0001250"),
        ("COPD", "ICD10CM:J44.9"),
        ("Abdominal pain", "HP:0002027"),
        ("fever", "HP:0001945"),
    ]
    for m in mentions:
        assert text[m.start : m.end] == m.text
    assert mentions[0].path[-1] == "ICD10CM:E11"
    assert mentions[0].path[0] == ROOT


def test_type_filter(tagger: DictionaryTagger) -> None:
    mentions = tagger.tag("Seizure in Marfan syndrome", types=["disease"])
    assert [m.node_id for m in mentions] == ["ORPHA:558"]


@pytest.mark.parametrize(
    ("sentence", "target", "expected"),
    [
        ("The patient has a fever.", "fever", Assertion.PRESENT),
        ("Patient denies fever or abdominal pain.", "abdominal pain", Assertion.NEGATED),
        ("No seizures since admission.", "seizures", Assertion.NEGATED),
        ("Pneumonia was ruled out.", "Pneumonia", Assertion.NEGATED),
        ("Findings are concerning for pneumonia.", "pneumonia", Assertion.UNCERTAIN),
        ("Pneumonia cannot be excluded.", "Pneumonia", Assertion.UNCERTAIN),
        ("History of type 2 diabetes mellitus.", "type 2 diabetes mellitus", Assertion.HISTORICAL),
        ("Her mother has Marfan syndrome.", "Marfan syndrome", Assertion.FAMILY),
        ("No change in seizures.", "seizures", Assertion.PRESENT),  # pseudo-trigger
        ("No fever, but reports seizures.", "seizures", Assertion.PRESENT),  # termination
        ("No fever. Seizures overnight.", "Seizures", Assertion.PRESENT),  # next sentence
    ],
)
def test_assertions_on_hand_checked_sentences(
    tagger: DictionaryTagger, sentence: str, target: str, expected: Assertion
) -> None:
    found = {m.text: m.assertion for m in tagger.tag(sentence)}
    assert found[target] == expected
