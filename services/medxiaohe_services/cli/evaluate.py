"""`medxiaohe eval ...`: benchmark harnesses that print one JSON object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from medxiaohe_services.cli.met import StoreOption, store_from

if TYPE_CHECKING:
    from medxiaohe.common.settings import Settings
    from medxiaohe.rubric.scoring import Grader

app = typer.Typer(help="Evaluate against benchmark data.", no_args_is_help=True)


@app.command()
def tagging(
    conll: Annotated[Path, typer.Option(help="CoNLL/IOB TSV file (token<TAB>tag).")],
    types: Annotated[
        str,
        typer.Option(help="Comma-separated entity types to score; default: those the file tags."),
    ] = "",
    tagger: Annotated[str, typer.Option(help="dictionary, ner or hybrid.")] = "dictionary",
    model: Annotated[
        str,
        typer.Option(help="NER model: store prefix, s3:// URI or folder (ner and hybrid)."),
    ] = "models/ner",
    merge: Annotated[str, typer.Option(help="Hybrid merge: ner or ner+dictionary.")] = (
        "ner+dictionary"
    ),
    store: StoreOption = None,
) -> None:
    """Entity-level exact-match precision, recall and F1 of a tagger on a CoNLL file."""
    from medxiaohe.common.settings import Settings
    from medxiaohe.datasets.conll import read_conll
    from medxiaohe.entities.hybrid import HybridTagger
    from medxiaohe.entities.ner import NerTagger
    from medxiaohe.entities.tagger import DictionaryTagger
    from medxiaohe.entities.tree import EntityTree
    from medxiaohe.eval.tagging import CORPUS_TYPE, evaluate
    from medxiaohe.models.folders import model_folder

    if tagger not in ("dictionary", "ner", "hybrid"):
        raise typer.BadParameter(f"unknown tagger {tagger!r}; one of dictionary, ner, hybrid")
    if not conll.is_file():
        raise typer.BadParameter(f"{conll} does not exist")
    settings = Settings.from_env(**({"store_uri": store} if store else {}))
    sentences = list(read_conll(conll))
    found: dict[str, list[tuple[int, int, str]]] = {}
    texts = [s.text for s in sentences]
    if tagger == "ner":
        ner = NerTagger(model_folder(model, settings))
        for text, spans in zip(texts, ner.tag_many(texts), strict=True):
            found[text] = [(s.start, s.end, s.label) for s in spans]
    else:
        dictionary = DictionaryTagger(EntityTree.load(store_from(store)))
        if tagger == "hybrid":  # spans and types are scored, not links: no linker
            hybrid = HybridTagger(dictionary, NerTagger(model_folder(model, settings)), merge=merge)
            mentions = hybrid.tag_many(texts, assertions=False)
        else:
            mentions = [dictionary.tag(text, assertions=False) for text in texts]
        for text, tagged in zip(texts, mentions, strict=True):
            found[text] = [
                (m.start, m.end, CORPUS_TYPE[m.entity_type])
                for m in tagged
                if m.entity_type in CORPUS_TYPE
            ]
    # a corpus that does not annotate a type (NCBI-disease: chemicals) cannot score it
    wanted = [t for t in types.split(",") if t] or sorted(
        {tag[2:] for s in sentences for tag in s.tags if tag != "O"}
    )
    typer.echo(json.dumps(evaluate(sentences, lambda text: found[text], wanted)))


@app.command()
def deid(
    notes: Annotated[int, typer.Option(min=200, help="Synthetic notes to generate.")] = 240,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 7,
) -> None:
    """Recall and precision per PHI type on the synthetic PHI set, without and with the record's
    own patient name as a deny list (as the pipeline runs it)."""
    from medxiaohe.corpus.deid import find_phi
    from medxiaohe.eval.deid import generate_notes, score

    generated = generate_notes(notes, seed)
    report = {
        "notes": len(generated),
        "rules_only": score(generated, lambda n: find_phi(n.text)),
        "with_patient_name": score(generated, lambda n: find_phi(n.text, [n.patient_name])),
    }
    typer.echo(json.dumps(report))


HEALTHBENCH = Path("../shared/data/healthbench/oss_eval_examples_1-30.jsonl")


@app.command()
def rubric(
    data: Annotated[Path, typer.Option(help="HealthBench JSONL.")] = HEALTHBENCH,
    grader: Annotated[str, typer.Option(help="deterministic, model or composite.")] = (
        "deterministic"
    ),
    judge: Annotated[
        str, typer.Option(help="The judge's OpenAI-compatible URL up to /v1 (model, composite).")
    ] = "",
    judge_model: Annotated[str, typer.Option(help="The judge's model name.")] = "",
    concurrency: Annotated[int, typer.Option(min=1, help="Judge calls at once.")] = 4,
    split: Annotated[
        str, typer.Option(help="all, tune or heldout: the shared examples split by example.")
    ] = "all",
    level: Annotated[
        str, typer.Option(help="all, cluster (consensus criteria) or example criteria.")
    ] = "all",
    store: StoreOption = None,
) -> None:
    """Ideal completions against degraded ones (off-topic, truncated, safety-stripped): mean
    scores and their bounds, how often the ideal wins, and how many criteria the grader
    decided."""
    from medxiaohe.common.settings import Settings
    from medxiaohe.eval.rubric import evaluate
    from medxiaohe.rubric.rubrics import load_healthbench

    if not data.is_file():
        raise typer.BadParameter(f"{data} does not exist (HealthBench JSONL)")
    settings = Settings.from_env(**({"store_uri": store} if store else {}))
    chosen = make_grader(grader, settings, judge, judge_model, concurrency)
    typer.echo(json.dumps(evaluate(load_healthbench(data), chosen, split, level)))


def make_grader(
    kind: str, settings: Settings, judge: str, judge_model: str, concurrency: int
) -> Grader:
    """The grader by name; model graders reach the judge through the model client."""
    from medxiaohe.common.errors import NotFound
    from medxiaohe.models.client import HttpModelClient
    from medxiaohe.rubric.deterministic import grader_with_tree
    from medxiaohe.rubric.model_grader import CompositeGrader, ModelGrader
    from medxiaohe.storage import open_store

    if kind not in ("deterministic", "model", "composite"):
        raise typer.BadParameter(f"unknown grader {kind!r}; one of deterministic, model, composite")
    try:
        deterministic = grader_with_tree(open_store(settings.store_uri, settings))
    except NotFound as exc:
        raise typer.BadParameter(str(exc)) from None
    if kind == "deterministic":
        return deterministic
    url = judge or settings.rubric_judge_url
    if not url:
        raise typer.BadParameter(f"the {kind} grader needs --judge or MEDXIAOHE_RUBRIC_JUDGE_URL")
    client = HttpModelClient(
        url,
        judge_model or settings.rubric_judge_model,
        api_key=settings.rubric_judge_api_key.get_secret_value(),
    )
    model = ModelGrader(client, judge_model or url, concurrency=concurrency)
    return model if kind == "model" else CompositeGrader(deterministic, model)


IU_XRAY = Path("../shared/data/iu_xray/reports_train_val.csv")


@app.command()
def grounding(
    reports: Annotated[Path, typer.Option(help="IU X-ray CSV (uid, split, findings, ...).")] = (
        IU_XRAY
    ),
    split: Annotated[str, typer.Option(help="The split measured (train or val).")] = "val",
    tune_split: Annotated[str, typer.Option(help="The split the baseline is tuned on.")] = "train",
    limit: Annotated[int, typer.Option(min=0, help="Reports per split; 0: all.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the paraphrases and errors.")] = 13,
    tree: Annotated[
        bool, typer.Option(help="Add the published Medical Entity Tree's concepts, if any.")
    ] = True,
    store: StoreOption = None,
) -> None:
    """Paraphrase IU X-ray reports, inject one error each (addition, negation, laterality,
    location, severity, omission) by rules independent of the verifier, and measure the
    verifier beside a token-overlap matcher tuned on the other split; the dynamic rubric's
    score on each corrupted report against its clean paraphrase."""
    from medxiaohe.eval.grounding import evaluate, rubric_drops
    from medxiaohe.radiology.verification import Verifier
    from medxiaohe_services.cli.verify import published_tagger

    if not reports.is_file():
        raise typer.BadParameter(f"{reports} does not exist (IU X-ray reports CSV)")
    if "test" in (split, tune_split):
        raise typer.BadParameter("the IU X-ray test split is held out: use train or val")
    tagger, met = published_tagger(store) if tree else (None, None)
    verifier = Verifier(tagger=tagger)
    result = evaluate(reports, split, tune_split, limit, seed, verifier, rubric_drops(tagger))
    typer.echo(json.dumps({**result, "met": met}))


@app.command()
def paraphrase(
    data: Annotated[Path, typer.Option(help="The VQA-RAD folder.")] = Path(
        "../shared/data/vqa_rad"
    ),
) -> None:
    """The decontamination thresholds on VQA-RAD: the paraphrase threshold on its linked
    question pairs (tuned on the train split, reported on both) and the image threshold's
    margins on its images."""
    from medxiaohe.datasets import vqa_rad
    from medxiaohe.eval.harness.seen import image_figures, paraphrase_figures

    if not (data / vqa_rad.FILE).is_file():
        raise typer.BadParameter(f"{data} has no VQA-RAD questions")
    typer.echo(json.dumps({**paraphrase_figures(data), "images": image_figures(data / "images")}))


@app.command()
def report(
    pred: Annotated[Path, typer.Option(help="Generated reports: JSONL (id, report) or IU CSV.")],
    ref: Annotated[Path, typer.Option(help="Reference reports, the same formats.")],
) -> None:
    """BLEU-4, ROUGE-L and entity F1 with assertions, per report and overall."""
    from medxiaohe.eval.report import evaluate, read_reports

    typer.echo(json.dumps(evaluate(read_reports(pred), read_reports(ref))))
