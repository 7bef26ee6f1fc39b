"""`medxiaohe rubric grade`: grade HealthBench-shaped rows with the platform's graders, for
other tools to drive (a JSONL in, a JSONL out, one row per row)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from medxiaohe_services.cli.met import StoreOption

app = typer.Typer(help="Rubric grading.", no_args_is_help=True)
STATUS = {True: "met", False: "not_met", None: "abstained"}


def grade_row(row: dict[str, Any], grader: Any, name: str) -> dict[str, Any]:
    """One HealthBench-shaped row (``prompt`` messages, ``completion`` or ``response``,
    ``rubrics``) graded: the score, its bounds and coverage, and every verdict."""
    from medxiaohe.rubric.rubrics import Rubric, criterion_from
    from medxiaohe.rubric.scoring import score_example

    conversation = [{"role": str(m["role"]), "content": str(m["content"])} for m in row["prompt"]]
    completion = row.get("completion", row.get("response"))
    if not isinstance(completion, str) or not completion.strip():
        raise ValueError("a row needs a non-empty completion (or response)")
    rubric = Rubric(tuple(criterion_from(c) for c in row["rubrics"]))
    verdicts = grader.grade(conversation, completion, rubric)
    scored = score_example(rubric, verdicts, row.get("example_tags") or ())
    return {
        "score": round(scored.score, 6),
        "raw_score": round(scored.raw, 6),
        "score_min": round(scored.score_min, 6),
        "score_max": round(scored.score_max, 6),
        "coverage": round(scored.coverage, 6),
        "grader": name,
        "verdicts": [
            {
                "criterion_id": c.id,
                "verdict": STATUS[v.met],
                "grader": v.grader,
                "explanation": v.explanation,
            }
            for c, v in zip(rubric.criteria, verdicts, strict=True)
        ],
    }


@app.command()
def grade(
    items: Annotated[Path, typer.Option(help="HealthBench-shaped JSONL: prompt, completion.")],
    out: Annotated[Path, typer.Option(help="Where the graded rows go (JSONL).")],
    grader: Annotated[str, typer.Option(help="deterministic, model or composite.")] = (
        "deterministic"
    ),
    judge: Annotated[str, typer.Option(help="The judge's URL up to /v1 (model, composite).")] = "",
    judge_model: Annotated[str, typer.Option(help="The judge's model name.")] = "",
    concurrency: Annotated[int, typer.Option(min=1, help="Judge calls at once.")] = 4,
    store: StoreOption = None,
) -> None:
    """Grade each row; a row that cannot be graded gets its ``error`` instead. Prints the
    counts and the mean score as JSON; the output is written whole or not at all."""
    from medxiaohe.common.errors import MedxError
    from medxiaohe.common.settings import Settings
    from medxiaohe_services.cli.evaluate import make_grader

    if not items.is_file():
        raise typer.BadParameter(f"{items} does not exist")
    settings = Settings.from_env(**({"store_uri": store} if store else {}))
    chosen = make_grader(grader, settings, judge, judge_model, concurrency)
    rows: list[dict[str, Any]] = []
    graded: list[float] = []
    failed = 0
    for number, line in enumerate(items.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            done = {"id": str(row.get("id", row.get("prompt_id", number)))}
            done |= grade_row(row, chosen, grader)
            graded.append(float(done["raw_score"]))  # HealthBench averages raw, then clips
        except (ValueError, KeyError, TypeError, MedxError) as exc:
            failed += 1
            done = {"id": str(number), "error": f"line {number}: {str(exc)[:200]}"}
        rows.append(done)
    partial = out.with_name(out.name + ".partial")
    partial.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    partial.replace(out)
    mean = round(min(1.0, max(0.0, sum(graded) / len(graded))), 4) if graded else None
    typer.echo(json.dumps({"rows": len(rows), "graded": len(graded), "errors": failed,
                           "mean_score": mean, "out": str(out)}))  # fmt: skip
