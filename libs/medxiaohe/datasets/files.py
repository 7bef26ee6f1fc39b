"""Opening a data set's files: required files named together when missing, a suite's file
inside its folder, JSON lines with their line numbers in errors, gzip read transparently."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput, NotFound


def need(data: Path, *names: str) -> list[Path]:
    """``data / name`` for each name; NotFound naming every missing one."""
    paths = [data / n for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise NotFound(f"missing from the shared data: {', '.join(missing)}")
    return paths


def file_or_inside(path: Path, name: str) -> Path:
    """``path`` itself when it is a file, else ``name`` inside it (NotFound when absent)."""
    found = path if path.is_file() else path / name
    if not found.is_file():
        raise NotFound(f"{found} is missing")
    return found


def lines(path: Path) -> Iterator[str]:
    """The lines of a text file, gzip-compressed when its name ends in .gz."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        yield from fh


def jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file (blank lines skipped)."""
    rows = []
    for number, line in enumerate(lines(path), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise InvalidInput(f"{path.name} line {number}: not JSON") from None
    return rows
