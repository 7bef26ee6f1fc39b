"""`medxiaohe decontaminate`: which benchmark items the training data copies, per suite and per
training source (ingested datasets, mixtures, synthesis items, SFT data, local JSONL files),
published as ``decontamination/<name>`` for the harness's clean-subset scores. Text copies by
13-grams or the exact question; image items also when a training record shows the image (a
perceptual hash) or asks the question in other words about it (``seen``); ``by_kind`` counts
each."""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.messages import content_text
from medxiaohe.corpus.overlap import BenchmarkIndex
from medxiaohe.eval.harness.suites import REPORT, RUBRIC, Item
from medxiaohe.storage import ArtifactStore, publish, resolve

PREFIX = "decontamination"
BATCH = 512


def index_entry(item: Item) -> tuple[str, str, str]:
    """(reference, text matched by 13-grams, text matched whole) of an item. Text-only items
    match by their exact question too (an image question such as "Is there a pneumothorax?" is
    not a copy of another image's). A reference report counts only as a whole: templated
    radiology phrasing shares 13-grams across most reports (179 of the 296 IU X-ray validation
    reports share one with a training report)."""
    ref = f"{item.suite}/{item.id}"
    if item.kind == REPORT:
        return ref, "", item.answer
    if item.kind == RUBRIC:
        return ref, " ".join(m["content"] for m in item.extra["example"].conversation), ""
    return ref, item.text(), "" if item.image else item.question


def benchmark_index(items: Sequence[Item]) -> BenchmarkIndex:
    """Every item by its ``index_entry``."""
    index = BenchmarkIndex()
    for item in items:
        index.add(*index_entry(item))
    return index


def _chat_texts(row: dict[str, Any]) -> list[str]:
    texts = [content_text(m.get("content")) for m in row.get("messages") or []]
    return texts or [str(row.get("text", ""))]


def _chat_rows(
    store: ArtifactStore, source: str
) -> tuple[Iterator[dict[str, Any]], Callable[[str], bytes]] | None:
    """The rows of a chat source (``chat:PREFIX:FILE`` in the store, or a local ``.jsonl``) and
    how to read an image a row names (a file of the same version, or one beside the file);
    None for other sources."""
    kind, _, rest = source.partition(":")
    if kind == "chat":
        from medxiaohe.storage import read_file

        prefix, _, name = rest.partition(":")
        manifest = resolve(store, prefix)
        body = read_file(store, manifest, name or "train.jsonl").decode()
        return _rows(body), lambda image: read_file(store, manifest, image)
    if source.endswith(".jsonl") and Path(source).is_file():
        from medxiaohe.common.paths import file_in

        folder = Path(source).parent
        body = Path(source).read_text(encoding="utf-8")
        return _rows(body), lambda image: file_in(folder, image).read_bytes()
    return None


def _rows(body: str) -> Iterator[dict[str, Any]]:
    return (json.loads(line) for line in body.splitlines() if line.strip())


def source_texts(
    store: ArtifactStore, source: str, data: Path = Path("../shared/data")
) -> Iterator[list[str]]:
    """The texts of each training record of a source: ``raw:cpt`` (the small model's raw
    training documents from ``data``, read in memory before de-identification shifts dates
    and replaces names: nothing is stored), ``dataset:NAME`` (ingested shards, de-identified),
    ``mixture:NAME`` (each drawn record once), ``chat:PREFIX:FILE`` (synthesis or SFT data in
    the store) or a local ``.jsonl`` file (``text`` or ``messages`` rows)."""
    kind, _, rest = source.partition(":")
    if source == "raw:cpt":
        from medxiaohe.corpus.public import cpt_documents
        from medxiaohe.entities.tree import EntityTree

        for document in cpt_documents(data, EntityTree.load(store)):
            yield [document["text"]]
    elif kind == "dataset":
        from medxiaohe.corpus.shards import list_shards, read_records

        for manifest in list_shards(store, rest):
            for row in read_records(store, manifest):
                yield [row["text"]]
    elif kind == "mixture":
        from medxiaohe.mixture.artifact import iter_mixture, mixture_prefix

        seen: set[str] = set()
        for row in iter_mixture(store, resolve(store, mixture_prefix(rest))):
            key = f"{row.get('source')}/{row.get('id')}"
            if key not in seen:
                seen.add(key)
                yield [str(row.get("text", ""))]
    elif (chat := _chat_rows(store, source)) is not None:
        for row in chat[0]:
            yield _chat_texts(row)
    else:
        raise InvalidInput(
            f"unknown source {source!r}: raw:cpt, dataset:NAME, mixture:NAME, chat:PREFIX:FILE "
            "or a .jsonl"
        )


def _first_question(row: dict[str, Any]) -> str:
    users = [m for m in row.get("messages") or [] if m.get("role") == "user"]
    return content_text(users[0].get("content")) if users else ""


def source_images(store: ArtifactStore, source: str) -> Iterator[tuple[str, list[bytes]]]:
    """(first question, image bytes) of each training record with images, from a chat source
    (``_chat_rows``); ingested datasets and mixtures are text."""
    chat = _chat_rows(store, source)
    if chat is None:
        return
    rows, load = chat
    for row in rows:
        if row.get("images"):
            yield _first_question(row), [load(str(name)) for name in row["images"]]


def source_label(source: str) -> str:
    """How a source is named in the published report: a store source as given; a local file
    by its content's SHA-256, never its path (a home folder, a file named after a patient)."""
    if source.endswith(".jsonl") and ":" not in source:
        return "file:sha256:" + hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]
    return source


def decontaminate(
    store: ArtifactStore,
    items: Sequence[Item],
    sources: Sequence[str],
    data: Path = Path("../shared/data"),
) -> dict[str, Any]:
    """Contaminated items per suite and per source, and the scan's speed."""
    index = benchmark_index(items)
    total = {s: sum(i.suite == s for i in items) for s in dict.fromkeys(i.suite for i in items)}
    hits: dict[str, set[str]] = defaultdict(set)  # suite -> item ids
    by_source: dict[str, dict[str, int]] = {}
    records = words = 0
    start = time.perf_counter()
    for source in sources:
        found: set[str] = set()
        batch: list[list[str]] = []
        for texts in source_texts(store, source, data):
            batch.append(texts)
            records += 1
            words += sum(len(t.split()) for t in texts)
            if len(batch) >= BATCH:
                found.update(*index.find(batch))
                batch = []
        if batch:
            found.update(*index.find(batch))
        per_suite: dict[str, int] = defaultdict(int)
        for ref in found:
            suite, _, item_id = ref.partition("/")
            hits[suite].add(item_id)
            per_suite[suite] += 1
        by_source[source_label(source)] = dict(sorted(per_suite.items()))
    text_hits = {s: len(ids) for s, ids in hits.items()}
    kinds: dict[str, dict[str, int]] = {s: {"text": text_hits.get(s, 0)} for s in total}
    for ref, found_as in _images_seen(store, items, sources).items():
        suite, _, item_id = ref.partition("/")
        for kind, hit in found_as.items():
            kinds[suite][kind] = kinds[suite].get(kind, 0) + hit
        if any(found_as.values()):
            hits[suite].add(item_id)
    elapsed = max(time.perf_counter() - start, 1e-9)
    return {
        "items": total,
        "contaminated": {s: len(hits.get(s, ())) for s in total},
        "by_kind": kinds,
        "by_source": by_source,
        "ids": {s: sorted(hits[s]) for s in total if hits.get(s)},
        "records": records,
        "records_per_s": round(records / elapsed, 1),
        "words_per_s": round(words / elapsed, 1),
        "n": index.n,
    }


def _images_seen(
    store: ArtifactStore, items: Sequence[Item], sources: Sequence[str]
) -> dict[str, dict[str, bool]]:
    """Image items whose image a training record shows (re-encoded, resized), and whose
    question it asks in other words about that image (``seen``)."""
    from itertools import chain

    from medxiaohe.eval.harness.seen import seen

    pictured = [
        (f"{i.suite}/{i.id}", Path(i.image).read_bytes(), i.question) for i in items if i.image
    ]
    if not pictured:
        return {}
    return seen(pictured, chain.from_iterable(source_images(store, s) for s in sources))


def publish_report(store: ArtifactStore, name: str, report: dict[str, Any]) -> str:
    manifest = publish(
        store, f"{PREFIX}/{name}", {"report.json": json.dumps(report, sort_keys=True).encode()}
    )
    return f"{manifest.prefix}/{manifest.version}"


def contaminated_ids(store: ArtifactStore, name: str) -> dict[str, set[str]]:
    """Suite -> contaminated item ids, from the latest ``decontamination/<name>``."""
    from medxiaohe.storage import read_file

    report = json.loads(read_file(store, resolve(store, f"{PREFIX}/{name}"), "report.json"))
    return {suite: set(ids) for suite, ids in report["ids"].items()}
