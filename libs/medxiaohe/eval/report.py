"""Generated reports against references: BLEU-4 (sacrebleu), ROUGE-L (Google's rouge-score) and
a clinical score, entity F1 with assertions (RadGraph-style): the observations each report
states with their assertion (``medxiaohe.radiology.reading``; normal statements and unknown
words left out), matched as sets."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.datasets import iu_xray
from medxiaohe.datasets.files import jsonl
from medxiaohe.radiology.reading import UNKNOWN, read
from medxiaohe.radiology.vocabulary import GROUP


@cache
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure."""
    return float(_rouge().score(reference, prediction)["rougeL"].fmeasure)


def entity_set(text: str, tagger: Any = None) -> set[tuple[str, str]]:
    """(observation, assertion) pairs a report states; uncertain counts as present."""
    return {
        (f.concept, "present" if f.positive else "negated")
        for sentence in read(text, tagger)
        for f in sentence.findings
        if f.kind not in (GROUP, UNKNOWN)
    }


def read_reports(path: Path) -> dict[str, str]:
    """id -> report text, from IU X-ray CSV (uid, findings, impression) or JSONL (id and
    report, text, or findings and impression)."""
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist")
    rows = iu_xray.rows(path) if path.suffix.lower() == ".csv" else jsonl(path)
    out = {}
    for row in rows:
        key = str(row.get("id") or row.get("uid") or "")
        text = (
            row.get("report")
            or row.get("text")
            or " ".join(str(row.get(k) or "") for k in ("findings", "impression"))
        )
        if not key or not str(text).strip():
            raise InvalidInput(f"{path.name}: every row needs an id and a report")
        out[key] = str(text).strip()
    return out


def evaluate(
    predictions: Mapping[str, str], references: Mapping[str, str], tagger: Any = None
) -> dict[str, Any]:
    import sacrebleu

    if not references:
        raise InvalidInput("no reference reports")
    missing = sorted(set(references) - set(predictions))
    extra = sorted(set(predictions) - set(references))
    if missing or extra:
        raise InvalidInput(
            f"{len(missing)} references have no prediction, {len(extra)} predictions no reference"
        )
    ids = sorted(references)
    per_report: list[dict[str, Any]] = []
    rouges: list[float] = []
    tp = fp = fn = 0
    for key in ids:
        pred, ref = predictions[key], references[key]
        said, truth = entity_set(pred, tagger), entity_set(ref, tagger)
        hits = len(said & truth)
        tp, fp, fn = tp + hits, fp + len(said - truth), fn + len(truth - said)
        f1 = 2 * hits / (len(said) + len(truth)) if said or truth else 1.0
        rouges.append(rouge_l(pred, ref))
        per_report.append(
            {
                "id": key,
                "bleu4": round(sacrebleu.sentence_bleu(pred, [ref]).score / 100, 4),
                "rouge_l": round(rouges[-1], 4),
                "entity_f1": round(f1, 4),
            }
        )
    corpus = sacrebleu.corpus_bleu([predictions[k] for k in ids], [[references[k] for k in ids]])
    return {
        "overall": {
            "bleu4": round(corpus.score / 100, 4),
            "rouge_l": round(sum(rouges) / len(ids), 4),
            "entity_f1": round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else 1.0,
        },
        "reports": len(ids),
        "per_report": per_report,
    }
