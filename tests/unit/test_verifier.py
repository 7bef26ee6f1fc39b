"""The report verifier on hand-written cases for each error type, and the grounding evaluation's
corruptions."""

from __future__ import annotations

from medxiaohe.eval.grounding import flip, rouge_l, swap_sides
from medxiaohe.report.claims import claims, split_sentences
from medxiaohe.report.verifier import ADDITION, LATERALITY, NEGATION, NOT_CHECKED, SUPPORTED, verify

SOURCE = (
    "Small left pleural effusion. No pneumothorax. Heart size is normal. "
    "Calcified granuloma in the right upper lobe."
)


def verdicts(report: str) -> tuple[list[str], tuple[str, ...]]:
    source = [c for s in split_sentences(SOURCE) for c in claims(s)]
    result = verify(split_sentences(report), source)
    return [s.verdict for s in result.sentences], result.omissions


def test_a_faithful_report_is_supported_throughout() -> None:
    found, omitted = verdicts(
        "There is a small left pleural effusion. There is no pneumothorax. The heart size is "
        "normal. A calcified granuloma is seen in the right upper lobe. Mild degenerative changes"
        " are not mentioned here. Bony structures intact"
    )
    assert found[:4] == [SUPPORTED] * 4
    assert found[-1] == NOT_CHECKED
    assert omitted == ()


def test_each_error_type_is_flagged_as_what_it_is() -> None:
    assert (
        verdicts("Small left pleural effusion. Focal consolidation in the lingula.")[0][1]
        == ADDITION
    )
    assert verdicts("Small left pleural effusion. Small pneumothorax.")[0][1] == NEGATION
    assert verdicts("No pleural effusion.")[0][0] == NEGATION
    assert verdicts("Small right pleural effusion.")[0][0] == LATERALITY
    assert verdicts("Heart size is enlarged.")[0][0] == NEGATION
    _, omitted = verdicts("No pneumothorax. Heart size is normal.")
    assert set(omitted) == {"pleural effusion", "granuloma"}


def test_the_corruptions_change_what_they_claim() -> None:
    negated = "There is no pleural effusion."
    assert claims(flip(negated) or "")[0].assertion == "present"
    assert claims(flip("There is a small pleural effusion.") or "")[0].assertion == "negated"
    assert flip("Bony structures are intact.") is None  # no observation to flip
    assert swap_sides("Left effusion, right granuloma.") == "Right effusion, left granuloma."
    assert rouge_l("no acute disease", "no acute disease") == 1.0
    assert 0 < rouge_l("there is no pneumothorax", "there is pneumothorax") < 1
