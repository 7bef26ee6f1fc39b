"""The one option extractor, on the shapes models answer in, and its agreement with the reward
that trains on it."""

from __future__ import annotations

import pytest

from medxiaohe.rubric.answers import Extraction, choice_summary, extraction, options_from_prompt
from medxiaohe.rubric.rewards import option_reward

OPTIONS = {
    "A": "Erythromycin ointment",
    "B": "Ketotifen eye drops",
    "C": "Warm compresses",
    "D": "Fluorometholone eye drops",
}


@pytest.mark.parametrize(
    ("reply", "expected", "how"),
    [
        ("B", "B", "letter"),
        ("B. Ketotifen eye drops", "B", "letter"),
        ("(C) because compresses soothe", "C", "letter"),
        ("**C**", "C", "letter"),
        ("Let me think about the allergy.\nB\n", "B", "letter"),
        ("Answer: B", "B", "statement"),
        ("**Answer:** C", "C", "statement"),
        ("After weighing it all, the answer is (D).", "D", "statement"),
        ("The correct option is C", "C", "statement"),
        ("The answer is **B. Ketotifen eye drops**", "B", "statement"),
        ("Final answer: B) Ketotifen", "B", "statement"),
        ("I choose D.", "D", "statement"),
        ("The answer is A because the discharge is purulent.", "A", "statement"),
        # a rejected choice before the real one
        ("A. is tempting but wrong here. The correct answer is (C).", "C", "statement"),
        ("Option A is incorrect: no infection. Option B is correct.", "B", "statement"),
        ("Option A (erythromycin) is less likely; the answer is D", "D", "statement"),
        # the option's text, after an article
        ("The answer is the ketotifen eye drops.", "B", "statement"),
        ("The answer is an erythromycin ointment.", "A", "statement"),
        ('{"answer": "A"}', "A", "json"),
        ('{"answer_choice": "c"}', "C", "json"),
        ('{"answer_choice": "B. Ketotifen eye drop"}', "B", "json"),  # the letter, not the text
        # two answers are no choice (MIRAGE reads the first)
        ('{"answer_choice": "A/B"}', None, "unparsed"),
        (
            '{"answer_choice": "A. Erythromycin ointment or B. Ketotifen eye drops"}',
            None,
            "unparsed",
        ),
        ('Reasoning first. {"reasoning": "allergic", "answer": "B"} done', "B", "json"),
        ('{"answer": "Ketotifen eye drops"}', "B", "json"),
        ("<think>A or C?</think>B", "B", "letter"),
        ("I would prescribe ketotifen eye drops for this.", "B", "text"),
        ("Fluorometholone eye drops.", "D", "text"),  # not "eye drops" of B: the longest wins
        # an article is no letter
        ("A common explanation is allergy, so ketotifen eye drops.", "B", "text"),
        ("A common explanation is allergy.", None, "unparsed"),
        ("The answer is a difficult one to give.", None, "unparsed"),
        ("the answer is a bacterial infection", None, "unparsed"),
        # replies that name no option
        ("I am not sure.", None, "unparsed"),
        ("Hepatitis B is a virus that infects the liver.", None, "unparsed"),
        ("Either warm compresses or erythromycin ointment.", None, "unparsed"),  # two options
        ("The answer is not A.", None, "unparsed"),
        ('{"answer": "Z"}', None, "unparsed"),
        ('{"reasoning": "unsure", "answer": ""}', None, "unparsed"),
        ("", None, "unparsed"),
    ],
)
def test_option_answers_in_the_shapes_models_use(
    reply: str, expected: str | None, how: str
) -> None:
    assert extraction(reply, OPTIONS) == Extraction(expected, how)


def test_options_are_read_from_the_prompt() -> None:
    assert options_from_prompt("What now? A) ibuprofen B) aspirin") == {
        "A": "ibuprofen",
        "B": "aspirin",
    }
    chat = [
        {"role": "system", "content": "Answer with a letter."},
        {"role": "user", "content": "Which?\nA. Alport syndrome\nB. Marfan syndrome\nC. None"},
    ]
    assert options_from_prompt(chat) == {
        "A": "Alport syndrome",
        "B": "Marfan syndrome",
        "C": "None",
    }
    assert options_from_prompt("Is vitamin B. deficient here?") == {}


def test_the_reward_reads_answers_as_the_harness_scores_them() -> None:
    """A reply the harness scores wrong or unparsed earns no reward: no path to game."""
    prompt = "Which is most likely? A. A bacterial infection B. Allergy C. A viral infection"
    replies = [
        "The answer is a bacterial infection.",  # the option's text: A, by both
        "The answer is allergy.",
        "a",  # an article, not a letter
        "A viral cause is likely given the fever.",  # no option named, no letter
        '{"answer": "C"}',
    ]
    options = options_from_prompt(prompt)
    harness = [extraction(r, options).letter for r in replies]
    assert harness == ["A", "B", None, None, "C"]
    rewards = option_reward([prompt] * 5, replies, ["A", "B", "A", "C", "C"])
    assert rewards == [float(h == g) for h, g in zip(harness, "ABACC", strict=True)]
    # the options may come as a column instead
    assert option_reward(["q"], ["It is allergy."], ["B"], options=[options]) == [1.0]


def test_a_collapsed_or_biased_answerer_shows_in_the_summary() -> None:
    gold = ["A", "A", "A", "B", "C", "D"]
    constant = choice_summary(["A"] * 6, gold)
    assert constant["accuracy"] == 0.5
    assert constant["balanced_accuracy"] == 0.25
    assert constant["top_answer_share"] == 1.0
    assert constant["constant_answer"] == 0.5
    mixed = choice_summary(["A", "B", "A", "B", "C", None], gold)
    assert mixed["unparsed_rate"] == round(1 / 6, 4)
    assert mixed["top_answer_share"] == round(2 / 6, 4)
