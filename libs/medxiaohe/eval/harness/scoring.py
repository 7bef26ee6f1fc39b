"""Per-suite scores from recorded predictions: accuracy (or the report metrics, or the rubric
score) with a bootstrap 95 % interval, the unparsed rate, and the same on the decontaminated
subset; a macro average over the suites; the table as Markdown and a PNG bar chart."""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from medxiaohe.eval.harness.suites import REPORT, RUBRIC, Item

ROUNDS = 1000


def bootstrap(values: Sequence[float], rounds: int = ROUNDS, seed: int = 0) -> list[float]:
    """The percentile bootstrap 95 % interval of the mean, clipped to [0, 1] as the scores
    are (a rubric's raw mean can be negative)."""
    if not values:
        return [0.0, 0.0]
    array = np.asarray(values, dtype=float)
    means = np.random.default_rng(seed).choice(array, size=(rounds, len(array))).mean(axis=1)
    low, high = np.clip(np.percentile(means, [2.5, 97.5]), 0.0, 1.0)
    return [round(float(low), 4), round(float(high), 4)]


def _report_metrics(items: Sequence[Item], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """BLEU-4, ROUGE-L, entity F1 with assertions, and the verifier's unsupported-claim rate
    (sentences whose claims the reference does not support, over sentences with claims)."""
    from medxiaohe.eval.report import evaluate
    from medxiaohe.radiology.verification import NOT_CHECKED, Verifier

    predictions = {r["id"]: r["output"].strip() or "(empty)" for r in records}
    references = {i.id: i.answer for i in items}
    scored = evaluate(predictions, references)
    verifier = Verifier()
    checked = unsupported = 0
    for item in items:
        for verdict in verifier.verify(item.answer, predictions[item.id]).sentences:
            checked += verdict.verdict != NOT_CHECKED
            unsupported += verdict.flagged
    rouge = [r["rouge_l"] for r in scored["per_report"]]
    return {
        "metric": "rouge_l",
        "score": scored["overall"]["rouge_l"],
        "ci95": bootstrap(rouge),
        **{k: scored["overall"][k] for k in ("bleu4", "entity_f1")},
        "unsupported_claim_rate": round(unsupported / checked, 4) if checked else 0.0,
    }


def score_suite(
    items: Sequence[Item],
    records: Sequence[dict[str, Any]],
    contaminated: Collection[str] | None = None,
) -> dict[str, Any]:
    """One suite's row; ``contaminated`` names the item ids left out of the clean score (None:
    no decontamination report, no clean score)."""
    kind = items[0].kind
    pairs = zip(items, records, strict=True)
    clean = (
        [(i, r) for i, r in pairs if i.id not in contaminated] if contaminated is not None else []
    )
    row: dict[str, Any] = {"n": len(items)}
    if contaminated is not None:
        row["contaminated"] = len(items) - len(clean)
    if kind == REPORT:
        row |= _report_metrics(items, records)
        if clean:
            clean_items, clean_records = [i for i, _ in clean], [r for _, r in clean]
            row["clean_score"] = _report_metrics(clean_items, clean_records)["score"]
        return row
    key = "score" if kind == RUBRIC else "correct"
    values = [float(r[key]) for r in records]
    clean_values = [float(r[key]) for _, r in clean]
    if kind == RUBRIC:
        # HealthBench's aggregate: the mean of the raw scores, clipped to [0, 1]; the bounds
        # aggregate the same way, and coverage says how much the grader decided
        def clipped(field: str) -> float:
            found = [float(r.get(field, r["score"])) for r in records]
            return round(float(np.clip(np.mean(found), 0, 1)), 4)

        row |= {
            "metric": "rubric_score",
            "score": clipped("score"),
            "score_min": clipped("score_min"),
            "score_max": clipped("score_max"),
            "coverage": round(float(np.mean([r.get("coverage", 1.0) for r in records])), 4),
            "ci95": bootstrap(values),
        }
    else:
        unparsed = sum(r["extracted"] is None for r in records)
        row |= {
            "metric": "accuracy",
            "score": round(float(np.mean(values)), 4),
            "ci95": bootstrap(values),
            "unparsed": unparsed,
            "unparsed_rate": round(unparsed / len(records), 4),
        }
    if clean_values:
        row["clean_score"] = round(float(np.clip(np.mean(clean_values), 0, 1)), 4)
        row["clean_ci95"] = bootstrap(clean_values)
    return row


def summarize(rows: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The macro average of the suites' headline scores (and of their clean scores)."""
    scores = [r["score"] for r in rows.values()]
    clean = [r["clean_score"] for r in rows.values() if "clean_score" in r]
    return {
        "macro_average": round(float(np.mean(scores)), 4) if scores else None,
        "clean_macro_average": round(float(np.mean(clean)), 4) if len(clean) == len(rows) else None,
    }


def markdown(result: Mapping[str, Any]) -> str:
    lines = [
        f"Model `{result['model']}`, prompts `{result['prompt_version']}`, grader "
        f"`{result['grader']}`, decontamination `{result['decontamination'] or 'none'}`.",
        "",
        "| suite | metric | score | 95% CI | n | unparsed | clean score | contaminated |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for suite, row in result["suites"].items():
        low, high = row["ci95"]
        unparsed = f"{row['unparsed_rate']:.1%}" if "unparsed_rate" in row else "-"
        clean = f"{row['clean_score']:.4f}" if "clean_score" in row else "-"
        lines.append(
            f"| {suite} | {row['metric']} | {row['score']:.4f} | {low:.4f}–{high:.4f} | "
            f"{row['n']} | {unparsed} | {clean} | {row.get('contaminated', '-')} |"
        )
    macro, clean_macro = result["macro_average"], result["clean_macro_average"]
    lines.append(
        f"| macro average | | {macro:.4f} | | | | "
        f"{'-' if clean_macro is None else f'{clean_macro:.4f}'} | |"
        if macro is not None
        else "| macro average | | - | | | | | |"
    )
    return "\n".join(lines) + "\n"


def chart(result: Mapping[str, Any]) -> bytes:
    """A PNG bar chart: each suite's score with its interval, beside its clean score."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    suites = list(result["suites"])
    rows = [result["suites"][s] for s in suites]
    x = np.arange(len(suites))
    score = np.array([r["score"] for r in rows])
    errors = np.array([[r["score"] - r["ci95"][0], r["ci95"][1] - r["score"]] for r in rows]).T
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(suites) + 2), 4))
    clean = any("clean_score" in r for r in rows)
    width = 0.4 if clean else 0.6
    shift = width / 2 if clean else 0.0
    axes.bar(x - shift, score, width, yerr=np.clip(errors, 0, None), capsize=3, label="all items")
    if clean:
        axes.bar(
            x + shift, [r.get("clean_score", 0.0) for r in rows], width, label="decontaminated"
        )
    axes.set_xticks(
        x, [f"{s}\n({r['metric']})" for s, r in zip(suites, rows, strict=True)], fontsize=7
    )
    axes.set_ylim(0, 1)
    axes.set_ylabel("score")
    axes.set_title(f"{result['model']} ({result['prompt_version']})", fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=110)
    plt.close(figure)
    return out.getvalue()
