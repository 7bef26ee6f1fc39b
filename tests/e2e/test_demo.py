"""`make demo` end to end: the embedded platform in its own process, exercised over mTLS."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medxiaohe.entities.tree import EntityTree
from medxiaohe.storage import open_store

# the subprocess's own limit (1800 s) catches a hang; pytest's default (300 s) must not
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]


@pytest.fixture
def home(tmp_path: Path, full_tree: EntityTree, tiny_model: Path) -> Path:
    """A home as a first `make demo` leaves it: the Medical Entity Tree in its store (the
    session's, built once and shared with the tree's own tests) and the tiny model. Building
    both is what `medxiaohe met build` and the model tests cover."""
    full_tree.save(open_store(str(tmp_path / "store")))
    shutil.copytree(tiny_model, tmp_path / "models" / "tiny-vlm")
    return tmp_path


def test_demo_passes(home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "medxiaohe_services.cli", "demo", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=1800,  # catches a hang only: a fresh clone's first demo takes minutes on 2 cores
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo passed" in result.stdout
    assert "FAIL" not in result.stdout
    assert "`make train-ner` trains the NER model" in result.stdout  # none in a fresh home
    assert "report generated with a verified trace" in result.stdout
    assert "items synthesized and verified for gap nodes" in result.stdout
    # the loop: the report is of the uploaded study, scored, exported as a trajectory, reviewable
    assert "GenerateReport: the stored study uploads/callers/medxiaohe-dev/" in result.stdout
    assert "trajectory row:" in result.stdout
    (review,) = [line for line in result.stdout.splitlines() if line.strip().startswith("review:")]
    assert "https://127.0.0.1:" in review
    assert "/reports/r-" in review
    assert (
        "review page: 200 with the development certificate (every sentence and its "
        "verdict: True), 401 without one" in result.stdout
    )
    fhir = json.loads((home / "demo-report.fhir.json").read_text())
    assert fhir["entry"][0]["resource"]["resourceType"] == "DiagnosticReport"
    # the upload sits under its caller's prefix, named by a keyed pseudonym of its key
    uploads = sorted((home / "store" / "uploads" / "callers" / "medxiaohe-dev").iterdir())
    assert sorted(u.suffix for u in uploads) == [".dcm", ".txt"]  # the note and the study
    assert not any("note" in u.name or "cxr" in u.name for u in uploads)
