"""PubTator files (NCBI-disease): ``PMID|t|title`` and ``PMID|a|abstract`` lines, then
annotations; each abstract with its title is one document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def pubtator_documents(path: Path) -> Iterator[dict[str, str]]:
    title = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("|", 2)
        if len(parts) == 3 and parts[1] == "t":
            title = parts[2]
        elif len(parts) == 3 and parts[1] == "a":
            yield {
                "id": f"ncbi-{parts[0]}",
                "source": "ncbi-disease",
                "text": f"{title} {parts[2]}",
            }
