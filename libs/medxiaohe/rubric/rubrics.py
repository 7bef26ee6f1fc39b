"""Rubrics as data: HealthBench criteria (text, points -10..+10, tags), HealthBench JSONL examples,
and the project's YAML rubric sets, versioned in the store so a score names what produced it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medxiaohe.common.errors import InvalidInput
from medxiaohe.datasets.healthbench import examples
from medxiaohe.storage import ArtifactStore, publish, read_file, resolve

SETS_PREFIX = "rubrics"
MAX_CRITERIA = 200
MAX_TEXT = 4000


@dataclass(frozen=True)
class Criterion:
    """One rubric item. Negative points penalize an undesired behaviour when it is present."""

    text: str
    points: int
    tags: tuple[str, ...] = ()
    id: str = ""

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise InvalidInput("a criterion needs text")
        if len(self.text) > MAX_TEXT:
            raise InvalidInput(f"a criterion's text may have at most {MAX_TEXT} characters")
        if isinstance(self.points, bool) or not isinstance(self.points, int):
            raise InvalidInput("criterion points must be an integer")
        if not -10 <= self.points <= 10 or self.points == 0:
            raise InvalidInput("criterion points must be between -10 and +10, and not 0")
        if not self.id:
            digest = hashlib.sha256(f"{self.points}:{self.text}".encode()).hexdigest()[:12]
            object.__setattr__(self, "id", f"c-{digest}")

    def tag_values(self, kind: str) -> list[str]:
        """Values of tags like ``axis:accuracy`` for kind "axis"."""
        return [t.split(":", 1)[1] for t in self.tags if t.startswith(kind + ":")]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "criterion": self.text,
            "points": self.points,
            "tags": list(self.tags),
        }


@dataclass(frozen=True)
class Rubric:
    criteria: tuple[Criterion, ...]
    set_id: str = ""  # where it came from: a rubric set, or "" when sent inline
    version: str = ""

    def __post_init__(self) -> None:
        if not self.criteria:
            raise InvalidInput("a rubric needs at least one criterion")
        if len(self.criteria) > MAX_CRITERIA:
            raise InvalidInput(f"a rubric may have at most {MAX_CRITERIA} criteria")
        if not any(c.points > 0 for c in self.criteria):
            raise InvalidInput("a rubric needs a criterion with positive points (the score's base)")
        ids = [c.id for c in self.criteria]
        if len(set(ids)) != len(ids):
            raise InvalidInput("criterion ids must be unique within a rubric")


@dataclass(frozen=True)
class Example:
    """A HealthBench example: the conversation so far, its rubric, and the physicians' ideal
    completion where there is one."""

    prompt_id: str
    conversation: tuple[dict[str, str], ...]
    rubric: Rubric
    example_tags: tuple[str, ...] = ()
    ideal_completion: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def criterion_from(data: Any) -> Criterion:
    if not isinstance(data, dict):
        raise InvalidInput("a criterion must be an object with criterion, points and tags")
    text = data.get("criterion", data.get("text"))
    if not isinstance(text, str):
        raise InvalidInput("a criterion needs its text under 'criterion'")
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidInput("criterion tags must be a list of strings")
    return Criterion(text, data.get("points"), tuple(tags), str(data.get("id") or ""))  # type: ignore[arg-type]


def load_healthbench(path: Path) -> list[Example]:
    """HealthBench examples with their rubrics (``datasets.healthbench`` reads the file)."""
    return [
        Example(
            prompt_id=row["prompt_id"],
            conversation=tuple(row["conversation"]),
            rubric=Rubric(tuple(criterion_from(c) for c in row["rubrics"])),
            example_tags=tuple(row["example_tags"]),
            ideal_completion=row["ideal_completion"],
        )
        for row in examples(path)
    ]


def rubric_from_yaml(text: str, set_id: str = "") -> Rubric:
    """A rubric set file: ``criteria: [{criterion, points, tags, id}]``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise InvalidInput("the rubric set is not valid YAML") from None
    if not isinstance(data, dict) or not isinstance(data.get("criteria"), list):
        raise InvalidInput("a rubric set needs a 'criteria' list")
    return Rubric(tuple(criterion_from(c) for c in data["criteria"]), set_id=set_id)


def rubric_to_yaml(criteria: Sequence[Criterion], description: str = "") -> str:
    body = {"description": description, "criteria": [c.as_dict() for c in criteria]}
    return yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def content_version(criteria: Sequence[Criterion]) -> str:
    """A rubric's version by its content: the same criteria, the same version."""
    return hashlib.sha256(rubric_to_yaml(list(criteria)).encode()).hexdigest()[:16]


def check_set_id(set_id: str) -> str:
    if not set_id or not all(ch.isalnum() or ch in "-_." for ch in set_id) or len(set_id) > 100:
        raise InvalidInput("a rubric set id has 1..100 letters, digits, '-', '_' or '.'")
    return set_id


def publish_rubric_set(store: ArtifactStore, set_id: str, criteria: Iterable[Criterion]) -> Rubric:
    """A new version of a rubric set (its content hash; the same content is the same version)."""
    text = rubric_to_yaml(list(criteria))
    rubric = rubric_from_yaml(text, check_set_id(set_id))
    version = content_version(rubric.criteria)
    publish(store, f"{SETS_PREFIX}/{set_id}", {"rubric.yaml": text.encode()}, version=version)
    return Rubric(rubric.criteria, set_id, version)


def load_rubric_set(store: ArtifactStore, set_id: str, version: str = "") -> Rubric:
    """A published rubric set (the latest version when none is named); NotFound otherwise."""
    manifest = resolve(store, f"{SETS_PREFIX}/{check_set_id(set_id)}", version or None)
    rubric = rubric_from_yaml(read_file(store, manifest, "rubric.yaml").decode(), set_id)
    return Rubric(rubric.criteria, set_id, manifest.version)


BUILTIN = Path(__file__).parent / "sets"


def builtin_sets() -> dict[str, str]:
    """The rubric sets that ship with the platform: id -> YAML text."""
    return {path.stem: path.read_text(encoding="utf-8") for path in sorted(BUILTIN.glob("*.yaml"))}


def publish_builtin_sets(store: ArtifactStore) -> dict[str, str]:
    """Each shipped set as a version in the store (the same content is the same version, so
    this is idempotent); id -> version."""
    return {
        set_id: publish_rubric_set(store, set_id, rubric_from_yaml(text).criteria).version
        for set_id, text in builtin_sets().items()
    }
