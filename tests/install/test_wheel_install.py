"""The package installs from wheels alone, outside the checkout, and deploys from there.

`make check` runs this (`make install-check`), not `make test`: a fresh environment takes about
90 s. What the images' build stage does, done in a temporary folder: a wheelhouse of the
project and of the dependencies PyPI ships only as source (sdist-only.txt), then a non-editable
install with --only-binary=:all: at the versions of constraints.txt."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TORCH_INDEX = os.environ.get("TORCH_INDEX", "https://download.pytorch.org/whl/cpu")
NOT_SOURCE = (".git", ".venv*", ".medxiaohe", "build", "*.egg-info", "__pycache__", ".*_cache")
PROFILES = ["lint", "default", "gpu", "hf-runtime", "training-job"]
pytestmark = pytest.mark.install


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{args[:4]} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def test_service_and_deploy_extras_install_from_wheels_and_deploy_outside_the_checkout(
    tmp_path: Path,
) -> None:
    wheels, venv, elsewhere = tmp_path / "wheels", tmp_path / "env", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check", "-q"]
    run(sys.executable, "-m", "venv", venv)
    # torch as the Makefile installs it: the local CPU wheel, else PyTorch's CPU index
    local = tmp_path / "torch"
    found = subprocess.run(
        [*pip, "download", "torch==2.13.0", "--no-deps", "--no-index", "-d", local],
        capture_output=True,
    )
    if found.returncode == 0:
        run(*pip, "install", "--only-binary=:all:", *local.glob("torch-*.whl"))
    else:
        run(*pip, "install", "--only-binary=:all:", "torch==2.13.0", "--index-url", TORCH_INDEX)
    # built from a copy of the checkout (an in-tree build leaves build/ behind)
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    build = {**os.environ, "DS_BUILD_OPS": "0"}
    run(*pip, "wheel", "--no-deps", "-w", wheels, ".", "-r", "sdist-only.txt",
        cwd=source, env=build)  # fmt: skip
    run(*pip, "install", "--only-binary=:all:", "--find-links", wheels,
        "-c", ROOT / "constraints.txt", "medxiaohe[services,deploy]")  # fmt: skip

    cli = venv / "bin" / "medxiaohe"
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    job = list(yaml.safe_load_all(run(cli, "train", "submit", "ner", "--backend", "kubernetes",
                                      "--dry-run", cwd=elsewhere, env=env)))  # fmt: skip
    assert [d["kind"] for d in job if d] == ["ConfigMap", "Job"]
    model = list(yaml.safe_load_all(run(cli, "model", "deploy", "s3://bucket/models/x", "--name",
                                        "x", "--dry-run", cwd=elsewhere, env=env)))  # fmt: skip
    assert [(d["kind"], d["metadata"]["name"]) for d in model if d] == [("InferenceService", "x")]
    # the chart and the KServe CRD schemas are package data: every profile renders and validates,
    # the KServe objects included (no "unchecked" line)
    report = run(cli, "chart", "check", cwd=elsewhere, env=env).splitlines()
    assert report == [f"{label}: ok" for label in PROFILES], report
    python = venv / "bin" / "python"
    chart = run(python, "-c", "from medxiaohe_services.deploy.manifests import CHART; "
                "print(CHART.resolve())", cwd=elsewhere, env=env).strip()  # fmt: skip
    assert Path(chart).is_relative_to(venv), chart
    # the training extra is not installed, and nothing above needed it
    missing = subprocess.run([python, "-c", "import trl"], env=env, capture_output=True)
    assert missing.returncode != 0
