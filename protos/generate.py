"""Generate Python code for protos/ into libs/medxiaohe_protos/ (`make protos`).

protoc derives Python module paths from proto paths (medxiaohe/<service>/v1/x.proto ->
medxiaohe.<service>.v1.x_pb2), which would collide with the `medxiaohe` library package.
The generated tree is therefore moved under `medxiaohe_protos` and its imports rewritten.

`python protos/generate.py --check` regenerates into a temporary folder and fails on any
difference with the checked-in code.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
TARGET = ROOT / "libs" / "medxiaohe_protos"
_IMPORT = re.compile(r"^(from|import) medxiaohe\.", re.MULTILINE)
HEADER = '"""Generated from protos/ by `make protos`; do not edit."""\n'


def generate(out: Path) -> None:
    with tempfile.TemporaryDirectory() as raw_dir:
        raw = Path(raw_dir)
        sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
        bindir = Path(sys.executable).parent
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
            f"--python_out={raw}",
            f"--grpc_python_out={raw}",
            f"--mypy_out={raw}",
            f"--mypy_grpc_out={raw}",
            *sources,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"protoc failed:\n{done.stderr}")
        out.mkdir(parents=True, exist_ok=True)
        (out / "__init__.py").write_text(HEADER)
        for path in sorted((raw / "medxiaohe").rglob("*")):
            rel = path.relative_to(raw / "medxiaohe")
            dest = out / rel
            if path.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                (dest / "__init__.py").write_text(HEADER)
                continue
            text = _IMPORT.sub(r"\1 medxiaohe_protos.", path.read_text())
            dest.write_text(text)


def differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    found = [f"only in one tree: {n}" for n in cmp.left_only + cmp.right_only]
    found += [f"differs: {n}" for n in cmp.diff_files]
    for name in cmp.common_dirs:
        found += [f"{name}/{d}" for d in differences(a / name, b / name)]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if checked-in code is stale")
    args = parser.parse_args()
    if not args.check:
        shutil.rmtree(TARGET, ignore_errors=True)
        generate(TARGET)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "medxiaohe_protos"
        generate(fresh)
        stale = differences(fresh, TARGET)
    for line in stale:
        print(f"protos out of sync: {line}", file=sys.stderr)
    if stale:
        print("run `make protos` and commit the result", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
