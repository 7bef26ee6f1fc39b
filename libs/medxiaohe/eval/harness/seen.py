"""Benchmark images and questions a training set has seen in other forms: an image re-encoded,
resized or cropped a little (a perceptual hash within ``IMAGE_BITS``), and a question asked in
other words about the same image (MiniLM cosine at or over ``PARAPHRASE``).

Thresholds, measured on VQA-RAD (``paraphrase_figures`` reprints the question figures):

* images: a copy at half size re-encoded as JPEG (quality 60) lies at most 2 bits from its
  original (pHash, 64 bits); two different VQA-RAD images lie 10 bits apart or more;
* questions: VQA-RAD links each question to its paraphrase (``qid_linked_id``). On the train
  split's 618 paraphrase pairs beside 4,283 pairs of other questions about the same image, a
  cosine of 0.65 gives the best F1 (recall 0.75, precision 0.70); the test split's pairs are
  reported, never tuned on.
"""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medxiaohe.datasets import vqa_rad as vqa

IMAGE_BITS = 6
PARAPHRASE = 0.65
MAX_IMAGE_BYTES = 64 * 1024 * 1024


def image_hash(data: bytes) -> np.ndarray:
    """The 64-bit perceptual hash (pHash) of an image, as 64 booleans."""
    import imagehash
    from PIL import Image

    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError("an image over 64 MiB")
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(imagehash.phash(image.convert("L")).hash, dtype=bool).ravel()


def same_images(benchmark: np.ndarray, training: np.ndarray) -> np.ndarray:
    """For hashes (n, 64) and (m, 64): an (n, m) matrix of which pairs are one image."""
    if not len(benchmark) or not len(training):
        return np.zeros((len(benchmark), len(training)), dtype=bool)
    distance = (benchmark[:, None, :] != training[None, :, :]).sum(-1)
    return np.asarray(distance <= IMAGE_BITS)


def _unit(texts: Sequence[str]) -> np.ndarray:
    """MiniLM embeddings of the texts, each of length 1."""
    from medxiaohe.evidence.retrievers import embed

    vectors = embed(list(texts))
    return np.asarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


def similarity(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """MiniLM cosine of each text of ``a`` with each of ``b``."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    return np.asarray(_unit(a) @ _unit(b).T)


def _paired(pairs: Sequence[tuple[str, ...]]) -> np.ndarray:
    """MiniLM cosine of each pair's two texts."""
    if not pairs:
        return np.zeros(0)
    return np.asarray((_unit([p[0] for p in pairs]) * _unit([p[1] for p in pairs])).sum(axis=1))


def seen(
    items: Sequence[tuple[str, bytes, str]], training: Iterable[tuple[str, Sequence[bytes]]]
) -> dict[str, dict[str, bool]]:
    """For each benchmark item (ref, image, question): whether a training record (question,
    images) shows its image, and whether one asks its question in other words about it."""
    if not items:
        return {}
    hashes = np.stack([image_hash(image) for _, image, _ in items])
    image_hit = np.zeros(len(items), dtype=bool)
    asked: dict[int, set[str]] = collections.defaultdict(set)  # item -> training questions
    hashed: dict[bytes, np.ndarray] = {}  # rows share images (VQA-RAD asks several of each)

    def hash_of(data: bytes) -> np.ndarray:
        digest = hashlib.sha256(data).digest()
        if digest not in hashed:
            hashed[digest] = image_hash(data)
        return hashed[digest]

    for question, images in training:
        if not images:
            continue
        theirs = np.stack([hash_of(data) for data in images])
        shown = same_images(hashes, theirs).any(axis=1)
        image_hit |= shown
        if question.strip():
            for hit in np.flatnonzero(shown):
                asked[int(hit)].add(question)
    out = {
        ref: {"image": bool(image_hit[k]), "paraphrase": False}
        for k, (ref, _, _) in enumerate(items)
    }
    for position, questions in asked.items():
        ref, _, question = items[position]
        if (similarity([question], sorted(questions)) >= PARAPHRASE).any():
            out[ref]["paraphrase"] = True
    return out


def image_figures(folder: Path) -> dict[str, Any]:
    """The image threshold's margins on a folder of images (VQA-RAD's): the largest distance
    of a copy at half size re-encoded as JPEG (quality 60) from its original, and the
    smallest distance between two different images."""
    from PIL import Image

    originals, copies = [], []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"}):
        data = path.read_bytes()
        originals.append(image_hash(data))
        with Image.open(io.BytesIO(data)) as image:
            small = image.convert("RGB").resize(
                (max(1, image.width // 2), max(1, image.height // 2))
            )
        out = io.BytesIO()
        small.save(out, format="JPEG", quality=60)
        copies.append(image_hash(out.getvalue()))
    hashes = np.stack(originals)
    distance = (hashes[:, None, :] != hashes[None, :, :]).sum(-1)
    apart = distance[np.triu_indices(len(hashes), 1)]
    copied = (hashes != np.stack(copies)).sum(-1)
    return {
        "images": len(hashes),
        "threshold_bits": IMAGE_BITS,
        "copy_max_bits": int(copied.max()),
        "different_min_bits": int(apart.min()),
    }


def paraphrase_figures(
    vqa_rad: Path, threshold: float = PARAPHRASE, splits: Sequence[str] = ("train", "test")
) -> dict[str, Any]:
    """Recall and precision of the paraphrase threshold on VQA-RAD's linked question pairs
    (against other questions about the same image), per split."""
    rows = vqa.questions(vqa_rad)
    out: dict[str, Any] = {"threshold": threshold, "tuned_on": "train"}
    for split in splits:
        part = [r for r in rows if vqa.is_test(r) == (split == "test")]
        linked = collections.defaultdict(list)
        by_image = collections.defaultdict(list)
        for r in part:
            linked[r["qid_linked_id"]].append(r["question"])
            by_image[r["image_name"]].append(r)
        positive = [tuple(v) for v in linked.values() if len(v) == 2]
        negative = [
            (a["question"], b["question"])
            for group in by_image.values()
            for a, b in itertools.combinations(group, 2)
            if a["qid_linked_id"] != b["qid_linked_id"]
        ]
        sp, sn = _paired(positive), _paired(negative)
        hits, false = int((sp >= threshold).sum()), int((sn >= threshold).sum())
        out[split] = {
            "paraphrase_pairs": len(positive),
            "other_pairs": len(negative),
            "recall": round(hits / max(1, len(positive)), 4),
            "precision": round(hits / max(1, hits + false), 4),
        }
    return out
