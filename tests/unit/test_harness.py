"""The benchmark harness without a model: short-answer and MIRAGE extraction, suites
from hand-made files, MIRAGE-format re-scoring, scores and intervals, and the benchmark
overlap index with the corpus step that drops copies."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medxiaohe.corpus.overlap import BenchmarkIndex, words
from medxiaohe.corpus.record import Record
from medxiaohe.corpus.steps import DropBenchmarkOverlap
from medxiaohe.eval.harness import prompts
from medxiaohe.eval.harness.contamination import benchmark_index
from medxiaohe.eval.harness.extract import extract_short, mirage_choice
from medxiaohe.eval.harness.rescore import read_mirage, rescore
from medxiaohe.eval.harness.scoring import bootstrap, markdown, score_suite
from medxiaohe.eval.harness.suites import Item, load_suite
from medxiaohe.training.public_data import REPORT_PROMPT
from medxiaohe_services.cli import app
from tests.conftest import SHARED_DATA

needs_vqa_rad = pytest.mark.skipif(
    not (SHARED_DATA / "vqa_rad").is_dir(), reason=f"{SHARED_DATA}/vqa_rad is absent"
)
OPTIONS = {
    "A": "Erythromycin ointment",
    "B": "Ketotifen eye drops",
    "C": "Warm compresses",
    "D": "Fluorometholone eye drops",
}
QUESTIONS = [
    (
        "A 35-year-old man comes to the physician because of itchy, watery eyes for the past "
        "week. He has also been sneezing multiple times a day. Which is the most appropriate "
        "treatment?",
        OPTIONS,
        "B",
    ),
    (
        "A 67-year-old man with transitional cell carcinoma of the bladder comes to the "
        "physician because of a 2-day history of ringing sensation in his ear. Which action "
        "explains the drug's benefit?",
        {"A": "Inhibition of proteasome", "B": "Hyperstabilization of microtubules",
         "C": "Generation of free radicals", "D": "Cross-linking of DNA"},
        "D",
    ),
    (
        "A 20-year-old man comes to the physician because of worsening gait unsteadiness and "
        "bilateral hearing loss for 1 month. This patient is at increased risk for which "
        "condition?",
        {"A": "Renal cell carcinoma", "B": "Meningioma", "C": "Astrocytoma",
         "D": "Vascular malformations"},
        "B",
    ),
]  # fmt: skip


def write_medqa(folder: Path, questions: list[tuple[str, dict[str, str], str]] = QUESTIONS) -> Path:
    """A MedQA-format file (the public release's fields)."""
    path = folder / "test_4options.jsonl"
    rows = [
        {"question": q, "options": o, "answer_idx": a, "answer": o[a], "meta_info": "step1"}
        for q, o, a in questions
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_short_answers_and_mirage_extraction() -> None:
    assert extract_short('{"answer": "Yes"}') == "yes"
    assert extract_short("No.\nThe lungs are clear.") == "no"
    assert extract_short("  ") is None
    assert extract_short('{"reasoning": "", "answer": ""}') is None
    thinking = '{"step_by_step_thinking": "The facial nerve ...", "answer_choice": "D"}'
    assert mirage_choice(thinking) == ("D", True)
    assert mirage_choice("I think Option C is right") == ("C", True)
    assert mirage_choice("Answer: B") == ("B", True)
    assert mirage_choice("no letter here") == ("A", False)  # MIRAGE's fall-back


def test_suites_read_their_public_formats(tmp_path: Path) -> None:
    items = load_suite("medqa", write_medqa(tmp_path))
    assert [i.id for i in items] == ["0000", "0001", "0002"]  # MIRAGE's keys
    assert items[0].answer == "B"
    assert items[0].options == OPTIONS
    mmlu = tmp_path / "mmlu"
    mmlu.mkdir()
    for subject in ("anatomy", "clinical_knowledge", "college_biology", "college_medicine",
                    "medical_genetics", "professional_medicine"):  # fmt: skip
        (mmlu / f"{subject}_test.csv").write_text('"Which, of these?",w,x,y,"z, too",D\n')
    rows = load_suite("mmlu_med", mmlu)
    assert rows[0].id == "anatomy-000"
    assert rows[0].options["D"] == "z, too"
    assert rows[0].answer == "D"
    assert len(rows) == 6
    message = prompts.messages(items[0], "zero-shot")[0]["content"]
    assert "B. Ketotifen eye drops" in message
    assert items[0].question in message
    schema = json.loads(prompts.schema(items[0], "thinking") or "{}")
    assert schema["required"] == ["reasoning", "answer"]
    assert list(schema["properties"]) == ["reasoning", "answer"]  # generated in this order
    assert schema["properties"]["answer"]["enum"] == ["A", "B", "C", "D"]
    # the report prompt is the one the small model was trained on
    report = Item("iu_xray", "1", "cough", "Clear lungs.", "report")
    assert prompts.messages(report, "zero-shot")[0]["content"] == REPORT_PROMPT.format("cough")


def test_mirage_format_rescoring_matches_hand_count(tmp_path: Path) -> None:
    data = write_medqa(tmp_path)  # gold: B, D, B
    folder = tmp_path / "mirage"
    folder.mkdir()
    outputs = {
        "0000": '{"step_by_step_thinking": "allergy", "answer_choice": "B"}',  # right
        "0001": '{"step_by_step_thinking": "cisplatin", "answer_choice": "C"}',  # wrong
        # 0002 has no file: wrong and unparsed
    }
    for key, output in outputs.items():
        (folder / f"test_{key}.json").write_text(json.dumps([output, "ignored second sample"]))
    args = ["eval", "score-predictions", "--suite", "medqa", "--format", "mirage"]
    result = CliRunner().invoke(app, [*args, "--predictions", str(folder), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"accuracy": round(1 / 3, 4), "n": 3, "unparsed": 1}
    (folder / "test_0002.json").write_text("[]")  # an empty list, as MIRAGE released some
    result = CliRunner().invoke(app, [*args, "--predictions", str(folder), "--data", str(data)])
    assert json.loads(result.output) == {"accuracy": round(1 / 3, 4), "n": 3, "unparsed": 1}
    # an output no pattern reads: MIRAGE's extraction falls back to "A", ours says unparsed
    (folder / "test_0002.json").write_text(json.dumps(["I cannot tell."]))
    for extraction, expected in (("ours", 1), ("mirage", 1)):
        invoked = CliRunner().invoke(
            app,
            [*args, "--predictions", str(folder), "--data", str(data), "--extraction", extraction],
        )
        assert json.loads(invoked.output)["unparsed"] == expected
    ours = tmp_path / "ours.jsonl"
    ours.write_text("".join(json.dumps({"id": k, "output": v}) + "\n" for k, v in outputs.items()))
    invoked = CliRunner().invoke(
        app, ["eval", "score-predictions", "--suite", "medqa", "--predictions", str(ours),
              "--data", str(data)],
    )  # fmt: skip
    assert json.loads(invoked.output) == {"accuracy": round(1 / 3, 4), "n": 3, "unparsed": 1}


def test_scores_intervals_and_clean_subset() -> None:
    items = [Item("medqa", str(i), "q", "A", "choice", {"A": "a", "B": "b"}) for i in range(4)]
    records = [
        {"correct": c, "extracted": e}
        for c, e in ((True, "A"), (False, "B"), (False, None), (True, "A"))
    ]
    row = score_suite(items, records, contaminated={"0"})
    assert row["score"] == 0.5
    assert row["unparsed"] == 1
    assert row["contaminated"] == 1
    assert row["clean_score"] == round(1 / 3, 4)
    low, high = row["ci95"]
    assert 0.0 <= low < 0.5 < high <= 1.0
    assert "clean_score" not in score_suite(items, records)  # no report, no clean score
    assert bootstrap([1.0] * 5) == [1.0, 1.0]
    table = markdown(
        {"model": "m", "prompt_version": "v1-zero-shot", "grader": "deterministic",
         "decontamination": "default", "suites": {"medqa": row}, "macro_average": 0.5,
         "clean_macro_average": 0.3333}
    )  # fmt: skip
    assert "| medqa | accuracy | 0.5000 |" in table
    assert "25.0%" in table


def test_overlap_index_finds_copies_across_batches() -> None:
    items = medqa_items()
    index = benchmark_index(items)
    question = items[1].question
    texts = [
        ["An unrelated abstract about lace plant leaves and programmed cell death in vivo."],
        [f"Study notes. {question.upper()} Discuss."],  # case and punctuation do not hide it
        ["Warm compresses"],  # an option alone: too short to be a copy
        ["user turn", items[2].question],  # an SFT row whose user turn is the question
    ]
    found = index.find(texts)
    assert found == [set(), {"medqa/0001"}, set(), {"medqa/0002"}]
    # 12 words of a question are not 13
    twelve = " ".join(words(question)[:12])
    assert index.find([[twelve]]) == [set()]
    assert len(BenchmarkIndex()) == 0
    assert BenchmarkIndex().find([["anything"]]) == [set()]


def medqa_items() -> list[Item]:
    return [Item("medqa", f"{i:04d}", q, a, "choice", o) for i, (q, o, a) in enumerate(QUESTIONS)]


def test_corpus_step_drops_copies_with_the_reason() -> None:
    step = DropBenchmarkOverlap(benchmark_index(medqa_items()), batch=2)
    records = [
        Record("r1", "notes", "Patient seen for a cough, lungs clear."),
        Record("r2", "forum", f"Q: {QUESTIONS[0][0]} A: ketotifen"),
        Record("r3", "notes", "Follow-up in two weeks."),
    ]
    out = list(step.run(records))
    assert [r.id for r in out] == ["r1", "r2", "r3"]  # dropped records keep flowing
    assert [r.dropped for r in out] == ["", "overlaps benchmark item medqa/0000", ""]


MIRAGE_PUBLISHED = [  # MIRAGE's CoT accuracies, as its evaluate.py computes them
    ("medqa", "medqa", "medqa_us", "gpt-35-turbo-16k", 0.6489),
    ("medqa", "medqa", "medqa_us", "gpt-4-32k", 0.8397),
    ("medmcqa", "medmcqa", "medmcqa", "gpt-35-turbo-16k", 0.5513),
    ("medmcqa", "medmcqa", "medmcqa", "gpt-4-32k", 0.6988),
    ("mmlu_med", "mmlu", "mmlu_med", "gpt-35-turbo-16k", 0.7291),
    ("mmlu_med", "mmlu", "mmlu_med", "gpt-4-32k", 0.8944),
]


@pytest.mark.parametrize(("suite", "dataset", "folder", "llm", "published"), MIRAGE_PUBLISHED)
def test_mirage_released_predictions_give_published_accuracy(
    suite: str, dataset: str, folder: str, llm: str, published: float
) -> None:
    """MIRAGE's released predictions (../shared/data/mirage_predictions holds MedMCQA's; the
    others where MIRAGE's prediction/ tree is unpacked as ../shared/data/mirage_baselines), read
    with its own extraction, give its published numbers exactly: empty prediction lists count
    wrong."""
    shipped = SHARED_DATA / "mirage_predictions" / dataset / "cot" / llm
    unpacked = SHARED_DATA / "mirage_baselines" / "prediction" / dataset / "cot" / "OpenAI" / llm
    predictions = next((p for p in (shipped, unpacked) if p.is_dir()), None)
    if predictions is None:
        pytest.skip(f"{shipped} and {unpacked} are absent (MIRAGE's released predictions)")
    items = load_suite(suite, SHARED_DATA / folder)
    outputs = read_mirage(predictions, suite, items)
    assert rescore(items, outputs, "mirage")["accuracy"] == pytest.approx(published, abs=1e-4)


def test_synthesized_questions_read_as_a_choice_suite(tmp_path: Path) -> None:
    from medxiaohe.common.errors import InvalidInput
    from medxiaohe.eval.harness.suites import synth_qa

    row = {
        "messages": [
            {"role": "user", "content": "Patient with X.\nWhich disease?\nA. Foo\nB. Bar"},
            {"role": "assistant", "content": "The answer is B."},
        ],
        "answer": "B",
    }
    (tmp_path / "heldout.jsonl").write_text(json.dumps(row) + "\n")
    (item,) = synth_qa(tmp_path)
    assert (item.id, item.kind, item.answer) == ("0000", "choice", "B")
    assert item.question == "Patient with X.\nWhich disease?"
    assert item.options == {"A": "Foo", "B": "Bar"}
    (tmp_path / "heldout.jsonl").write_text(json.dumps(row | {"answer": "E"}) + "\n")
    with pytest.raises(InvalidInput, match="letter answer"):
        synth_qa(tmp_path)


def test_a_crafted_data_set_cannot_send_a_local_file_to_the_model(tmp_path: Path) -> None:
    """VQA-RAD names each image; a data set naming ../ or an absolute path, or linking out
    of its folder, is refused before anything is read (it would go to the model)."""
    import json

    from medxiaohe.common.errors import InvalidInput
    from medxiaohe.common.paths import file_in
    from medxiaohe.eval.harness.suites import vqa_rad_closed

    (tmp_path / "images").mkdir()
    (tmp_path / "secret.txt").write_text("not for the model")
    (tmp_path / "images" / "ok.jpg").write_bytes(b"jpg")
    (tmp_path / "images" / "link.jpg").symlink_to(tmp_path / "secret.txt")
    assert file_in(tmp_path / "images", "ok.jpg") == (tmp_path / "images" / "ok.jpg").resolve()
    for name in ("../secret.txt", str(tmp_path / "secret.txt"), "link.jpg", ""):
        with pytest.raises(InvalidInput):
            file_in(tmp_path / "images", name)
    row = {"qid": 1, "question": "Is there a mass?", "answer": "yes", "answer_type": "CLOSED",
           "phrase_type": "test_freeform", "image_name": "../secret.txt"}  # fmt: skip
    (tmp_path / "VQA_RAD Dataset Public.json").write_text(json.dumps([row]))
    with pytest.raises(InvalidInput, match="inside its data set"):
        vqa_rad_closed(tmp_path)


def test_the_decontamination_report_names_local_files_by_content(tmp_path: Path) -> None:
    """A local training file is named by its content's digest: the report is published, and
    a path can hold a user's home or a file named after a patient."""
    import json

    from medxiaohe.eval.harness.contamination import decontaminate
    from medxiaohe.eval.harness.suites import CHOICE, Item
    from medxiaohe.storage import open_store

    question = "Which vitamin deficiency causes scurvy in sailors on long sea voyages with no fruit"
    folder = tmp_path / "home" / "dr-lovelace" / "patient-48213377"
    folder.mkdir(parents=True)
    local = folder / "notes.jsonl"
    local.write_text(json.dumps({"text": f"Recall: {question}"}) + "\n")
    item = Item("medqa", "0001", question, "C", CHOICE, {"A": "a", "B": "b", "C": "c"})
    report = decontaminate(open_store(str(tmp_path / "store")), [item], [str(local)])
    published = json.dumps(report)
    assert "lovelace" not in published
    assert "48213377" not in published
    ((label, hits),) = report["by_source"].items()
    assert label.startswith("file:sha256:")
    assert hits == {"medqa": 1}


def test_decontamination_sees_images_and_paraphrases(tmp_path: Path) -> None:
    """A VQA item whose image a training row shows re-encoded at half size counts as seen; a
    training question about it in other words counts as a paraphrase; another image, or the
    same image with an unrelated question, does not."""
    import io

    from PIL import Image, ImageDraw

    from medxiaohe.eval.harness.contamination import decontaminate
    from medxiaohe.eval.harness.suites import Item
    from medxiaohe.storage import open_store

    def picture(seed: int) -> Image.Image:
        image = Image.new("L", (256, 256), 30)
        draw = ImageDraw.Draw(image)
        rng = random.Random(seed)
        for _ in range(12):
            x, y = rng.randrange(200), rng.randrange(200)
            draw.ellipse((x, y, x + rng.randrange(20, 56), y + rng.randrange(20, 56)), fill=220)
        return image

    def jpeg(image: Image.Image) -> bytes:
        out = io.BytesIO()
        image.resize((128, 128)).save(out, format="JPEG", quality=60)
        return out.getvalue()

    items = []
    for k, question in enumerate(
        ["Is there a rib fracture?", "Is the heart enlarged?", "Is this an MRI?"]
    ):
        path = tmp_path / f"bench{k}.png"
        picture(k).save(path)
        items.append(Item("vqa_rad_closed", str(k), question, "no", "closed", image=str(path)))
    (tmp_path / "train0.jpg").write_bytes(jpeg(picture(0)))  # item 0's image, re-encoded
    (tmp_path / "train1.jpg").write_bytes(jpeg(picture(1)))  # item 1's image
    rows = [
        {"messages": [{"role": "user", "content": "Are any of the ribs broken?"},
                      {"role": "assistant", "content": "no"}], "images": ["train0.jpg"]},
        {"messages": [{"role": "user", "content": "What organ system is shown?"},
                      {"role": "assistant", "content": "chest"}], "images": ["train1.jpg"]},
    ]  # fmt: skip
    local = tmp_path / "sft.jsonl"
    local.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = decontaminate(open_store(str(tmp_path / "store")), items, [str(local)])
    assert report["by_kind"]["vqa_rad_closed"] == {"text": 0, "image": 2, "paraphrase": 1}
    assert report["ids"]["vqa_rad_closed"] == ["0", "1"]
    assert report["contaminated"]["vqa_rad_closed"] == 2


@needs_vqa_rad
def test_the_paraphrase_threshold_holds_on_vqa_rads_test_pairs() -> None:
    """Tuned on the train split's linked questions; the test split's are reported."""
    from medxiaohe.eval.harness.seen import paraphrase_figures

    figures = paraphrase_figures(SHARED_DATA / "vqa_rad", splits=("test",))
    assert figures["test"]["paraphrase_pairs"] > 100
    assert figures["test"]["precision"] > 0.75
    assert figures["test"]["recall"] > 0.6


@pytest.mark.skipif(not (SHARED_DATA / "iu_xray").is_dir(), reason="the shared data is absent")
def test_raw_training_text_is_scanned_before_de_identification(tmp_path: Path) -> None:
    """``raw:cpt`` reads the small model's training documents in memory, as they are before
    de-identification shifts dates and replaces names; nothing is written to the store."""
    from medxiaohe.datasets import iu_xray
    from medxiaohe.eval.harness.contamination import decontaminate
    from medxiaohe.eval.harness.suites import CHOICE, Item
    from medxiaohe.storage import open_store
    from tests.conftest import publish_small_tree

    store_uri = str(tmp_path / "store")
    publish_small_tree(store_uri)
    store = open_store(store_uri)
    before = {o.key for o in store.list("")}
    report = next(
        r["report"]
        for r in iu_xray.reports(SHARED_DATA / "iu_xray", "train")
        if len(r["report"].split()) > 30
    )
    copied = " ".join(report.split()[:20])
    item = Item("medqa", "copy", copied, "A", CHOICE, {"A": "a", "B": "b"})
    found = decontaminate(store, [item], ["raw:cpt"], SHARED_DATA)
    assert found["contaminated"] == {"medqa": 1}
    assert {o.key for o in store.list("")} == before


@pytest.mark.skipif(
    not (SHARED_DATA / "mirage_predictions").is_dir(), reason="MIRAGE's predictions are absent"
)
def test_make_figures_gathers_a_steps_json_into_one_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``medxiaohe figures`` runs a step's own command and keeps what it prints: here the MIRAGE
    MedMCQA reproduction, both extractions, as JSON and as table rows; published too."""
    from medxiaohe.storage import open_store, resolve

    monkeypatch.setenv("MEDXIAOHE_STORE_URI", str(tmp_path / "store"))
    out = tmp_path / "figures"
    args = ["figures", "--only", "extraction", "--data", str(SHARED_DATA), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    figures = json.loads((out / "figures.json").read_text())["steps"]["extraction"]["figures"]
    assert figures["gpt-4-32k.mirage"]["accuracy"] == 0.6988
    assert figures["gpt-35-turbo-16k.mirage"]["accuracy"] == 0.5513
    table = (out / "figures.md").read_text()
    assert "| extraction | gpt-4-32k.ours.accuracy |" in table
    assert resolve(open_store(str(tmp_path / "store")), "figures/make").version
