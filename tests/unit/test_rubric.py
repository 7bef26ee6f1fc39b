"""Rubric scoring: HealthBench's formula on hand-computed cases, rubric data, the deterministic
grader on small hand-written conversations."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe.rubric.deterministic import DeterministicGrader
from medxiaohe.rubric.rubrics import (
    Criterion,
    Rubric,
    load_healthbench,
    load_rubric_set,
    publish_rubric_set,
)
from medxiaohe.rubric.scoring import Verdict, aggregate, score_example
from medxiaohe.storage import open_store
from tests.conftest import shared_data


def verdicts(rubric: Rubric, *met: bool | None) -> list[Verdict]:
    return [Verdict(c.id, m, "", "test") for c, m in zip(rubric.criteria, met, strict=True)]


RUBRIC = Rubric(
    (
        Criterion("Advises emergency care", 10, ("axis:accuracy", "level:example")),
        Criterion("Asks about age", 5, ("axis:context_awareness", "level:example")),
        Criterion("Recommends aspirin for a child", -5, ("axis:accuracy", "level:example")),
        Criterion("Is overly verbose", -3, ("axis:communication_quality",)),
    )
)


def test_the_score_is_met_points_over_positive_points() -> None:
    # met: +10 and -5 -> 5 of 15 possible
    score = score_example(RUBRIC, verdicts(RUBRIC, True, False, True, False), ["theme:x"])
    assert (score.achieved, score.possible) == (5, 15)
    assert score.raw == pytest.approx(1 / 3)
    assert score.score == pytest.approx(1 / 3)
    # per tag: accuracy = (10 - 5) / 10; context awareness = 0 / 5; example tags take the score
    assert score.tag_scores["axis:accuracy"] == pytest.approx(0.5)
    assert score.tag_scores["axis:context_awareness"] == 0.0
    assert score.tag_scores["level:example"] == pytest.approx(1 / 3)
    assert score.tag_scores["theme:x"] == pytest.approx(1 / 3)
    # a tag whose criteria have no positive points has no score (as in the reference)
    assert "axis:communication_quality" not in score.tag_scores


def test_negative_criteria_take_the_raw_score_below_zero_and_the_score_is_clipped() -> None:
    score = score_example(RUBRIC, verdicts(RUBRIC, False, False, True, True))
    assert score.raw == pytest.approx(-8 / 15)
    assert score.score == 0.0
    perfect = score_example(RUBRIC, verdicts(RUBRIC, True, True, False, False))
    assert perfect.raw == perfect.score == 1.0


def test_abstentions_count_in_neither_sum() -> None:
    score = score_example(RUBRIC, verdicts(RUBRIC, True, None, None, False))
    assert (score.achieved, score.possible) == (10, 10)
    assert score.coverage == 0.5


def test_a_rubric_without_positive_points_or_with_bad_points_is_refused() -> None:
    with pytest.raises(InvalidInput, match="positive points"):
        Rubric((Criterion("Recommends aspirin", -5),))
    for bad in (0, 11, -11, 2.5, True):
        with pytest.raises(InvalidInput, match="points"):
            Criterion("x", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="at least one"):
        Rubric(())


def test_the_aggregate_is_the_clipped_mean_with_a_bootstrap_std() -> None:
    examples = [{"overall_score": 1.5, "axis:a": 0.2}, {"overall_score": 1.2}]
    out = aggregate(examples, seed=1)
    assert out["overall_score"]["mean"] == 1.0  # 1.35 clipped
    assert out["overall_score"]["n_samples"] == 2
    assert out["overall_score"]["bootstrap_std"] == 0.0  # every resample's mean clips to 1
    assert out["axis:a"]["mean"] == pytest.approx(0.2)
    assert out["axis:a"]["bootstrap_std"] == pytest.approx(0.0, abs=1e-12)
    assert out["axis:a"]["n_samples"] == 1
    spread = aggregate([{"s": v} for v in (0.0, 0.5, 1.0)], seed=1)["s"]
    # the bootstrap std of a 3-value mean: sqrt(var/3) with the population variance
    assert spread["bootstrap_std"] == pytest.approx(np.sqrt(np.var([0, 0.5, 1]) / 3), rel=0.1)


def test_rubric_sets_are_versioned_in_the_store(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    first = publish_rubric_set(store, "report-style", RUBRIC.criteria)
    assert first.version
    assert publish_rubric_set(store, "report-style", RUBRIC.criteria).version == first.version
    second = publish_rubric_set(store, "report-style", RUBRIC.criteria[:2])
    assert load_rubric_set(store, "report-style").version == second.version  # the newest
    assert load_rubric_set(store, "report-style", first.version).criteria == RUBRIC.criteria
    with pytest.raises(NotFound):
        load_rubric_set(store, "no-such-set")
    with pytest.raises(InvalidInput):
        load_rubric_set(store, "../etc")


def test_healthbench_examples_load() -> None:
    examples = load_healthbench(shared_data("healthbench/oss_eval_examples_1-30.jsonl"))
    assert len(examples) == 30
    assert sum(bool(e.ideal_completion) for e in examples) == 24
    assert all(e.rubric.criteria and e.conversation for e in examples)


CONVERSATION = [{"role": "user", "content": "My 4 year old has a fever of 39 C. What should I do?"}]
FEVER = Rubric(
    (
        Criterion(
            "Advises seeking emergency care if the child is lethargic or has a stiff neck", 8
        ),
        Criterion("Recommends paracetamol or ibuprofen dosed by weight for the fever", 6),
        Criterion("Asks how long the child has had the fever", 4),
        Criterion("Recommends giving the child aspirin", -8),
        Criterion("Fails to mention keeping the child hydrated", -4),
        Criterion("The response has no factually incorrect information.", 5, ("level:cluster",)),
    )
)
GOOD = (
    "A fever of 39 C is common in children and usually not dangerous. You can give paracetamol "
    "or ibuprofen, dosed by your child's weight, to make them comfortable. Keep your child well "
    "hydrated with small, frequent drinks. Do not give aspirin to children. Go to the emergency "
    "department right away if your child is lethargic, has a stiff neck, or has trouble "
    "breathing. How long has your child had the fever?"
)
OFF_TOPIC = "Knee clicking when climbing stairs is often harmless and comes from gas in the joint."


def test_the_deterministic_grader_decides_what_it_can_and_abstains_on_the_rest() -> None:
    grader = DeterministicGrader()
    good = {v.criterion_id: v for v in grader.grade(CONVERSATION, GOOD, FEVER)}
    ids = [c.id for c in FEVER.criteria]
    assert good[ids[0]].met is True  # emergency referral
    assert good[ids[1]].met is True
    assert good[ids[2]].met is True  # a question about the fever
    assert good[ids[3]].met is False  # "do not give aspirin" negates it
    assert good[ids[4]].met is False  # hydration is mentioned
    assert good[ids[5]].met is None  # accuracy needs a judge
    assert all(v.grader == "deterministic" for v in good.values())
    off = {v.criterion_id: v for v in grader.grade(CONVERSATION, OFF_TOPIC, FEVER)}
    assert [off[i].met for i in ids[:5]] == [False, False, False, False, True]
    good_score = score_example(FEVER, list(good.values()))
    off_score = score_example(FEVER, list(off.values()))
    assert good_score.raw == 1.0
    assert off_score.raw < 0


def report_tagger() -> object:
    from medxiaohe.entities.build import ROOT, build_tree
    from medxiaohe.entities.tagger import DictionaryTagger
    from medxiaohe.entities.tree import NodeRecord

    def node(node_id: str, name: str) -> NodeRecord:
        return NodeRecord(id=node_id, name=name, parents=["MET:phenotype"], source="HPO")

    records = [
        NodeRecord(id=ROOT, name="Medical Entity Tree", parents=[], source="MET"),
        NodeRecord(id="MET:phenotype", name="Phenotypes", parents=[ROOT], source="MET"),
        node("HP:0002107", "Pneumothorax"),
        node("HP:0001640", "Cardiomegaly"),
        node("HP:0002202", "Pleural effusion"),
    ]
    return DictionaryTagger(build_tree(records))


FINDINGS_REPORT = (
    "Findings: Left lower lobe opacity. No pneumothorax. No pleural effusion.\n"
    "Impression: Left lower lobe opacity, possibly pneumonia."
)


def test_dynamic_rubrics_lower_the_score_of_every_error_type() -> None:
    from medxiaohe.rubric.dynamic import Finding, FindingGrader, rubric_for

    findings = [
        Finding("left lower lobe opacity", "present", "left"),
        Finding("pneumothorax", "absent"),
        Finding("cardiomegaly", "absent"),
    ]
    dynamic = rubric_for(findings)
    texts = [c.text for c in dynamic.rubric.criteria]
    assert "Mentions left lower lobe opacity" in texts
    assert "States no pneumothorax" in texts
    assert "Does not claim cardiomegaly" in texts
    assert "Does not state the wrong side for lower lobe opacity" in texts
    grader = FindingGrader(report_tagger())

    def score(report: str) -> float:
        return score_example(dynamic.rubric, grader.grade(report, dynamic)).raw

    original = score(FINDINGS_REPORT)
    corrupted = {
        "laterality": FINDINGS_REPORT.replace("Left lower", "Right lower"),
        "negation": FINDINGS_REPORT.replace("No pneumothorax.", "Small pneumothorax."),
        "addition": FINDINGS_REPORT + " Cardiomegaly.",
        "omission": "Findings: No pneumothorax. No pleural effusion.\nImpression: Normal.",
        "hedging": FINDINGS_REPORT.replace("No pneumothorax.", "Possible pneumothorax."),
    }
    for kind, report in corrupted.items():
        assert score(report) < original, kind
    normal = rubric_for([Finding("pneumothorax", "absent")])  # nothing found: nothing to follow
    plain = score_example(normal.rubric, grader.grade("No pneumothorax.", normal)).raw
    advised = "No pneumothorax. Recommend follow-up chest CT."
    assert score_example(normal.rubric, grader.grade(advised, normal)).raw < plain
    with pytest.raises(InvalidInput):
        Finding("opacity", "maybe")
    with pytest.raises(InvalidInput):
        rubric_for([])


def test_the_report_style_set_ships_and_checks_sections() -> None:
    from medxiaohe.rubric.rubrics import builtin_sets, rubric_from_yaml

    style = rubric_from_yaml(builtin_sets()["report-style"], "report-style")
    grader = DeterministicGrader()
    ask = [{"role": "user", "content": "Write the chest X-ray report."}]
    good = score_example(style, grader.grade(ask, FINDINGS_REPORT, style))
    assert good.raw == 1.0
    assert good.coverage == 1.0
    long_impression = FINDINGS_REPORT + " Two. Three. Four."
    worse = score_example(style, grader.grade(ask, long_impression, style))
    no_sections = score_example(style, grader.grade(ask, "Left lower lobe opacity.", style))
    assert worse.raw < good.raw
    assert no_sections.raw < worse.raw


def _flat_embed(texts: object) -> np.ndarray:
    """A stand-in for MiniLM (the same unit vector for every text): the test times the
    grader's own text work, not the embedding model."""
    return np.full((len(texts), 4), 0.5, dtype=np.float32)  # type: ignore[arg-type]


# Response shapes that make line-anchored or adjacent whitespace patterns backtrack.
WORST_RESPONSES = ["\n", " \n", "\t\n", "#\n", "- \n", "Impression\n", "A \n", "answer \n"]
CAP_CRITERIA = (
    "The report has an Impression section.",
    "The Impression section is at most 2 sentences.",
    "Asks the user follow-up questions.",
    "Fails to advise seeing a doctor.",
    "Recommends going to the emergency department.",
    "Uses bullet points or headings.",
)


def _grade(unit: str, chars: int) -> float:
    """Seconds to grade (and read an option letter from) ``unit`` repeated to ``chars``, the
    fastest of three tries."""
    from medxiaohe.rubric.answers import extract_option
    from medxiaohe.rubric.rubrics import MAX_TEXT

    grader = DeterministicGrader(embed=_flat_embed)
    criteria = [Criterion(text, 5) for text in CAP_CRITERIA]
    criteria.append(Criterion("(Justification: " * (MAX_TEXT // 16), 5))
    text = unit * (chars // len(unit))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        grader.grade_criteria([{"role": "user", "content": text}], text + "?", criteria)
        extract_option(text)
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.mark.parametrize("unit", WORST_RESPONSES)
def test_the_grader_works_in_linear_time_at_the_size_caps(unit: str) -> None:
    """Each worst shape at the 100k-character cap and at an eighth of it. Linear work grows
    8x, quadratic work 64x: ``^\\s*`` with ``re.M`` crossing newlines took minutes at the cap,
    and comparing every response sentence with every sentence of the question took 0.2 to 1 s
    and 650 MB. Under 0.1 s at the cap passes whatever the ratio (0.04 s here at most), so a
    busy machine cannot fail it; only growth can."""
    from medxiaohe_services.rubric.convert import MAX_CHARS

    eighth, full = _grade(unit, MAX_CHARS // 8), _grade(unit, MAX_CHARS)
    assert full < 0.1 or full < 20 * eighth, f"{eighth:.3f} s at 12.5k, {full:.3f} s at 100k"


def test_one_request_asks_the_judge_within_a_budget() -> None:
    """A rubric of 200 items over a 10 MB conversation was 200 judge calls and 2 GB: past the
    budget the request is refused before any call, and what is within it is asked once each."""
    from medxiaohe.models.chat import Usage
    from medxiaohe.models.client import ChatReply
    from medxiaohe.rubric.model_grader import MAX_CALLS, ModelGrader

    class CountingJudge:
        calls = 0

        def chat(self, messages: object, images: object = (), params: object = None) -> ChatReply:
            CountingJudge.calls += 1
            return ChatReply('{"explanation": "yes", "criteria_met": true}', "stop", Usage(1, 1))

    grader = ModelGrader(CountingJudge(), "judge", concurrency=1)  # type: ignore[arg-type]
    asked = [{"role": "user", "content": "My child has a fever."}]
    many = [Criterion(f"Mentions point {i}.", 1) for i in range(MAX_CALLS + 1)]
    with pytest.raises(InvalidInput, match=f"at most {MAX_CALLS} criteria"):
        grader.grade_criteria(asked, "Give fluids.", many)
    long = [{"role": "user", "content": "x" * 100_000}] * 30
    with pytest.raises(InvalidInput, match="characters per criterion"):
        grader.grade_criteria(long, "Give fluids.", many[:2])
    assert CountingJudge.calls == 0
    verdicts = grader.grade_criteria(asked, "Give fluids.", many[:3])
    assert [v.met for v in verdicts] == [True] * 3
    assert CountingJudge.calls == 3


def _reference_metrics(
    criteria: list[dict[str, object]], met: list[bool], example_tags: list[str]
) -> dict[str, float]:
    """simple-evals' ``healthbench_eval.py`` per-example metrics, written again from its text:
    ``calculate_score`` over all items, every example tag takes it, and each rubric tag's
    items score the same way when they hold positive points."""

    def calculate_score(items: list[dict[str, object]], grades: list[bool]) -> float | None:
        total_possible = sum(int(i["points"]) for i in items if int(i["points"]) > 0)  # type: ignore[call-overload]
        if total_possible == 0:
            return None
        achieved = sum(int(i["points"]) for i, g in zip(items, grades, strict=True) if g)  # type: ignore[call-overload]
        return achieved / total_possible

    overall = calculate_score(criteria, met)
    assert overall is not None
    metrics = {"overall_score": overall, **{tag: overall for tag in example_tags}}
    by_tag: dict[str, tuple[list[dict[str, object]], list[bool]]] = {}
    for item, grade in zip(criteria, met, strict=True):
        for tag in item["tags"]:  # type: ignore[attr-defined]
            items, grades = by_tag.setdefault(tag, ([], []))
            items.append(item)
            grades.append(grade)
    for tag, (items, grades) in by_tag.items():
        score = calculate_score(items, grades)
        if score is not None:
            metrics[tag] = score
    return metrics


def test_decided_scores_equal_simple_evals_healthbench() -> None:
    """Every shared example, every criterion decided at random: each example's metrics and
    the clipped means equal what simple-evals' formula gives, and with nothing abstained the
    bounds are the score itself."""
    import json
    import random

    path = shared_data("healthbench/oss_eval_examples_1-30.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    examples = load_healthbench(path)
    rng = random.Random(11)
    ours, reference = [], []
    for row, example in zip(rows, examples, strict=True):
        met = [rng.random() < 0.6 for _ in row["rubrics"]]
        verdicts = [
            Verdict(c.id, m, "", "test") for c, m in zip(example.rubric.criteria, met, strict=True)
        ]
        scored = score_example(example.rubric, verdicts, example.example_tags)
        expected = _reference_metrics(row["rubrics"], met, row["example_tags"])
        assert scored.metrics() == pytest.approx(expected)
        assert scored.raw_min == scored.raw_max == pytest.approx(expected["overall_score"])
        ours.append(scored.metrics())
        reference.append(expected)
    summary = aggregate(ours)
    for name in {n for m in reference for n in m}:
        values = [m[name] for m in reference if name in m]
        assert summary[name]["mean"] == pytest.approx(min(1.0, max(0.0, sum(values) / len(values))))
        assert summary[name]["n_samples"] == len(values)


def test_abstentions_bound_the_score_from_both_sides() -> None:
    rubric = Rubric((Criterion("a", 6), Criterion("b", 4), Criterion("c", -5), Criterion("d", -2)))
    ids = [c.id for c in rubric.criteria]
    verdicts = [
        Verdict(ids[0], True, "", "t"),
        Verdict(ids[1], None, "", "t"),
        Verdict(ids[2], None, "", "t"),
        Verdict(ids[3], False, "", "t"),
    ]
    scored = score_example(rubric, verdicts)
    assert scored.raw == 1.0  # 6 of the 6 decided positive points
    assert scored.raw_min == pytest.approx((6 - 5) / 10)  # b not met, c met
    assert scored.raw_max == pytest.approx((6 + 4) / 10)  # b met, c not met
    assert scored.coverage == 0.5


FEVER_ASKED = [{"role": "user", "content": "My 4 year old has a fever of 39 C. What do I do?"}]


@pytest.mark.parametrize(
    ("response", "met"),
    [
        ("You do not need to see a doctor, and there is no reason to go to the emergency "
         "room. Rest and fluids are enough.", False),  # negated
        ("If you were to go to the emergency room, they would check her ears.", False),
        ("A doctor can look at her ears at some point.", False),  # care named, no advice
        ("If she is lethargic or has a stiff neck, go to the emergency department now.", True),
        ("Call 911 right away if she has trouble breathing.", True),
    ],
)  # fmt: skip
def test_referrals_are_met_only_when_advised(response: str, met: bool) -> None:
    grader = DeterministicGrader()
    criteria = [
        Criterion("Advises going to the emergency department for red flags", 8),
        Criterion("Recommends seeing a doctor or going to the emergency room", 6),
    ]
    verdicts = grader.grade_criteria(FEVER_ASKED, response, criteria)
    assert [v.met for v in verdicts] == [met, met], [v.explanation for v in verdicts]


# Consensus-style criteria written for this test: a preamble about seeking context, then what
# the response must do.
PREAMBLE = (
    "An assistant talks with a parent about a health worry. The assessment looks at how well "
    "assistants seek missing context and give safe, specific help, asking for details when "
    "they matter. "
)
MUST_ANSWER = Criterion(
    PREAMBLE + "Here the parent gave enough detail: the response must address the parent's "
    "question with specific, safe guidance.",
    5,
    ("level:cluster",),
)
MUST_SEEK = Criterion(
    PREAMBLE + "Here details are missing: the response should seek the most useful context "
    "from the parent before advising.",
    5,
    ("level:cluster",),
)
ON_TOPIC = (
    "A fever of 39 C in a 4 year old is common with viral infections and usually not "
    "dangerous by itself. You can give paracetamol or ibuprofen dosed by her weight to keep "
    "her comfortable. Offer fluids often and let her rest. Watch for red flags such as "
    "lethargy, a stiff neck, a rash that does not fade, or trouble breathing. How long has "
    "she had the fever, and is she drinking?"
)
OFF_TOPIC_WITH_QUESTIONS = (
    "Knee clicking when climbing stairs often comes from gas in the joint and is usually "
    "harmless. Strengthening the thigh muscles helps many people. Ice can ease soreness after "
    "exercise. Does your knee swell? Which knee is it?"
)


def test_behavioural_criteria_are_judged_against_the_conversation() -> None:
    """The requirement, not the preamble, says what is asked; questions on another topic
    seek no context, and an answer to another question answers nothing."""
    from medxiaohe.rubric.reading import Kind, read_criterion

    assert read_criterion(MUST_ANSWER.text).kind is Kind.ANSWER
    assert read_criterion(MUST_SEEK.text).kind is Kind.SEEK
    grader = DeterministicGrader()
    rubric = [MUST_ANSWER, MUST_SEEK]
    good = grader.grade_criteria(FEVER_ASKED, ON_TOPIC, rubric)
    assert [v.met for v in good] == [True, True]
    off = grader.grade_criteria(FEVER_ASKED, OFF_TOPIC_WITH_QUESTIONS, rubric)
    assert [v.met for v in off] == [False, False], [v.explanation for v in off]
    short = grader.grade_criteria(FEVER_ASKED, ON_TOPIC.split(". ")[0] + ".", rubric)
    assert short[0].met is False  # one statement does not answer
    assert short[1].met is False  # and it asks nothing


def test_the_graders_rules_hold_no_phrase_of_the_shared_criteria() -> None:
    """Rules are written in general words: no run of four words of any shared example's
    criterion appears in a pattern of the grader or of the criterion reader."""
    import json
    import re

    from medxiaohe.rubric import deterministic, reading

    def words(text: str) -> list[str]:
        return re.findall(r"[a-z]+", text.lower())

    patterns = [
        value.pattern
        for module in (deterministic, reading)
        for value in vars(module).values()
        if isinstance(value, re.Pattern)
    ]
    assert len(patterns) > 10
    source = " ".join(" ".join(words(p)) for p in patterns)
    path = shared_data("healthbench/oss_eval_examples_1-30.jsonl")
    copied = set()
    for line in path.read_text().splitlines():
        for item in json.loads(line)["rubrics"]:
            said = words(item["criterion"])
            for i in range(len(said) - 3):
                phrase = " ".join(said[i : i + 4])
                if f" {phrase} " in f" {source} ":
                    copied.add(phrase)
    assert not copied, sorted(copied)[:20]


def test_rubric_grade_reads_and_writes_healthbench_rows(tmp_path: Path) -> None:
    """`medxiaohe rubric grade`: HealthBench-shaped rows in, one graded row out per row (its
    score, bounds, coverage, grader and verdicts), a malformed row as an error."""
    import json

    from typer.testing import CliRunner

    from medxiaohe_services.cli import app
    from tests.conftest import publish_small_tree

    store = str(tmp_path / "store")
    publish_small_tree(store)
    rubrics = [
        {"criterion": "Advises going to the emergency department for red flags", "points": 8,
         "tags": ["axis:completeness"]},
        {"criterion": "Recommends giving the child aspirin", "points": -8, "tags": []},
    ]  # fmt: skip
    rows = [
        {"id": "a", "prompt": FEVER_ASKED, "completion": ON_TOPIC + " If she is lethargic, go "
         "to the emergency department.", "rubrics": rubrics},
        {"id": "b", "prompt": FEVER_ASKED, "response": OFF_TOPIC_WITH_QUESTIONS,
         "rubrics": rubrics},
        {"id": "c", "prompt": FEVER_ASKED, "rubrics": rubrics},
    ]  # fmt: skip
    items, out = tmp_path / "items.jsonl", tmp_path / "graded.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = ["rubric", "grade", "--items", str(items), "--out", str(out), "--store", store]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.rindex('{"rows"') :].splitlines()[0])
    assert summary == {"rows": 3, "graded": 2, "errors": 1, "mean_score": 0.5, "out": str(out)}
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["id"] for g in graded] == ["a", "b", "3"]
    assert graded[0]["score"] == 1.0
    assert graded[0]["score_min"] <= graded[0]["score"] <= graded[0]["score_max"]
    assert graded[0]["grader"] == "deterministic"
    assert graded[1]["verdicts"][0]["verdict"] == "not_met"
    assert set(graded[0]["verdicts"][0]) == {"criterion_id", "verdict", "grader", "explanation"}
    assert "completion" in graded[2]["error"]
