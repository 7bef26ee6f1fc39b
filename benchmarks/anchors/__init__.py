"""Side environments and the scripts that run in them (stdlib + the anchor library only)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def ensure_env(name: str) -> Path:
    """The python of ``.venv-<name>`` at the repository root, created from
    ``requirements-<name>.txt`` on first use."""
    env = ROOT / f".venv-{name}"
    python = env / "bin" / "python"
    stamp = env / ".installed"
    requirements = HERE / f"requirements-{name}.txt"
    if not stamp.is_file() or stamp.read_text() != requirements.read_text():
        print(f"creating the anchor environment {env.name} (first run only)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
                str(requirements),
            ],
            check=True,
        )
        stamp.write_text(requirements.read_text())
    return python


def run_anchor(name: str, script: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run ``script`` in the ``name`` side environment with a JSON payload; return its JSON."""
    python = ensure_env(name)
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps(payload))
        done = subprocess.run(
            [str(python), str(HERE / script), str(job)], capture_output=True, text=True, check=False
        )
    if done.returncode:
        raise RuntimeError(f"{script} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
