"""Chat data for SFT: JSON lines of ``{"messages": [...], "images": [names]}`` in OpenAI's
message shape, read from a published artifact (``PREFIX:FILE``, e.g. ``synthesis/default:
train.jsonl``; images are files of the same version) or a local ``.jsonl`` file (images beside
it). Every row is checked at the boundary: roles, an assistant turn, at most ``MAX_IMAGES``
images, and as many images as image parts."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.messages import content_text
from medxiaohe.common.paths import file_in
from medxiaohe.storage import ArtifactStore, Manifest, publish, read_file, resolve

ROLES = {"system", "user", "assistant", "tool"}
# columns a reward reads: the item's rubric (criteria, or {"findings": [...]} for a report) and
# a choice question's options (letter -> text)
COLUMNS: dict[str, tuple[type, ...]] = {"rubric": (list, dict), "options": (dict,)}
MAX_IMAGES = 8
MAX_ROWS = 1_000_000


def _check(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
        raise InvalidInput(f"{where}: a row needs a 'messages' list")
    messages = row["messages"]
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidInput(f"{where}: every message needs a role in {sorted(ROLES)}")
    if not any(m["role"] == "assistant" for m in messages):
        raise InvalidInput(f"{where}: a row needs an assistant turn to learn from")
    images = row.get("images") or []
    if not isinstance(images, list) or len(images) > MAX_IMAGES:
        raise InvalidInput(f"{where}: 'images' must be a list of at most {MAX_IMAGES} names")
    checked = {"messages": messages, "images": images}
    if isinstance(row.get("answer"), str):  # the gold answer a reward checks (RL, RFT)
        checked["answer"] = row["answer"]
    if isinstance(row.get("tools"), list):  # the tools a trajectory's calls were offered
        checked["tools"] = row["tools"]
    for column, kind in COLUMNS.items():  # what a reward layer reads per prompt
        if row.get(column) is not None:
            if not isinstance(row[column], kind):
                raise InvalidInput(f"{where}: '{column}' must be a {kind[0].__name__}")
            checked[column] = row[column]
    return checked


def _image(data: bytes, where: str) -> Any:
    from PIL import Image

    from medxiaohe.corpus.readers import clean_image

    clean, _ = clean_image(data)  # PNG or JPEG, bounded pixels, decodable
    try:
        return Image.open(io.BytesIO(clean)).convert("RGB")
    except OSError as exc:
        raise InvalidInput(f"{where}: {exc}") from None


def read_chat(store: ArtifactStore, source: str) -> list[dict[str, Any]]:
    """The rows of one source, images decoded (PIL, RGB)."""
    if source.endswith(".jsonl") and ":" not in source:
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise InvalidInput(f"cannot read chat data {source}: {exc.strerror}") from None

        def load(name: str) -> bytes:
            return file_in(path.parent, name).read_bytes()
    else:
        prefix, _, name = source.partition(":")
        manifest = resolve(store, prefix)
        text = read_file(store, manifest, name or "train.jsonl").decode()

        def load(name: str) -> bytes:
            return read_file(store, manifest, name)

    rows: list[dict[str, Any]] = []
    decoded: dict[str, Any] = {}  # rows that share an image share one decoded copy
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(rows) == MAX_ROWS:
            raise InvalidInput(f"{source}: more than {MAX_ROWS:,} rows")
        where = f"{source} line {number}"
        try:
            row = _check(json.loads(line), where)
        except json.JSONDecodeError:
            raise InvalidInput(f"{where}: not JSON") from None
        for name in row["images"]:
            if name not in decoded:
                decoded[name] = _image(load(name), where)
        row["images"] = [decoded[n] for n in row["images"]]
        rows.append(row)
    if not rows:
        raise InvalidInput(f"{source} holds no rows")
    return rows


def read_sources(store: ArtifactStore, sources: Sequence[str]) -> list[dict[str, Any]]:
    return [row for source in sources for row in read_chat(store, source)]


def with_image_parts(row: dict[str, Any]) -> dict[str, Any]:
    """The row with every content a list of parts (an Arrow column holds one type); a row whose
    messages place none of its images gets them before its first user turn (TRL's convention
    for string contents)."""
    messages = []
    for message in row["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        messages.append({"role": message["role"], "content": list(content or [])})
    placed = sum(p.get("type") == "image" for m in messages for p in m["content"])
    if row["images"] and not placed:
        first = next((m for m in messages if m["role"] == "user"), messages[0])
        first["content"][:0] = [{"type": "image"} for _ in row["images"]]
    return {"messages": messages, "images": row["images"]}


def tools_as_text(row: dict[str, Any]) -> dict[str, Any]:
    """A row whose messages call tools as a chat template without tools reads it, the form
    the predictor sends the model: calls and results as text, the tools listed first."""
    messages = row["messages"]
    if not any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        return row
    from medxiaohe.models.tools import tools_from, with_tools

    specs = row.get("tools")
    tools = tools_from(specs) if specs else []
    return {**row, "messages": with_tools(messages, tools, "auto" if tools else "none")}


def prompts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prompts (the turns before the last assistant turn: a tool trajectory's calls and results
    as text) and their gold answers (the row's ``answer``, else that turn), for RL and
    rejection sampling; with images where some row has images."""
    images = any(r["images"] for r in rows)
    out = []
    for row in rows:
        shaped = tools_as_text(row)  # a trajectory's calls and results, as SFT reads them
        shaped = with_image_parts(shaped) if images else shaped
        messages = shaped["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        reply = content_text(messages[last]["content"])
        item = {"prompt": messages[:last], "answer": row.get("answer") or reply}
        item |= {c: row[c] for c in COLUMNS if c in row}
        out.append(item | ({"images": shaped["images"]} if images else {}))
    return out


def publish_chat(
    store: ArtifactStore,
    prefix: str,
    splits: Mapping[str, Iterable[dict[str, Any]]],
    images: Mapping[str, bytes] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Manifest:
    """Publish chat rows as ``<split>.jsonl`` files (rows checked) with their images."""
    files: dict[str, bytes | Path] = {}
    for split, rows in splits.items():
        lines = [json.dumps(_check(r, split) | dict(r), sort_keys=True) for r in rows]
        files[f"{split}.jsonl"] = "".join(line + "\n" for line in lines).encode()
    files.update(images or {})
    return publish(store, prefix, files, metadata=metadata)
