"""The decision trace: every agent's steps, in order, each with its id, the steps it follows
from, its tool call and result, citations, regions and conclusion. Steps are handed to a
listener the moment they end, so a service can stream them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from medxiaohe.report.model import Citation, Region

AGENTS = ("perception", "reasoning", "style", "verifier")
KINDS = ("observation", "tool_call", "tool_result", "decision", "verification")


@dataclass
class Step:
    id: str
    agent: str
    kind: str
    content: str = ""
    parents: tuple[str, ...] = ()
    tool: str = ""
    tool_call_id: str = ""
    arguments: Any = None  # JSON-ready
    result: Any = None  # JSON-ready
    status: str = "ok"  # ok or error
    started: str = ""  # ISO 8601, UTC
    duration_ms: int = 0
    citations: tuple[Citation, ...] = ()
    regions: tuple[Region, ...] = ()
    conclusion: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def step_from_dict(data: dict[str, Any]) -> Step:
    return Step(
        **{
            **data,
            "parents": tuple(data["parents"]),
            "citations": tuple(Citation(**c) for c in data["citations"]),
            "regions": tuple(Region(**{**r, "box": tuple(r["box"])}) for r in data["regions"]),
        }
    )


@dataclass
class Trace:
    """Records steps and hands each to ``listener`` as soon as it is complete."""

    listener: Callable[[Step], None] = lambda step: None
    steps: list[Step] = field(default_factory=list)
    _count: int = 0

    @contextmanager
    def step(self, agent: str, kind: str, **values: Any) -> Iterator[Step]:
        """A step timed around the ``with`` body, which may fill it in; emitted at the end
        (marked as an error, and re-raised, when the body raises)."""
        self._count += 1
        step = Step(f"s{self._count}", agent, kind, **values)
        step.started = datetime.now(UTC).isoformat(timespec="milliseconds")
        began = time.perf_counter()
        try:
            yield step
        except BaseException:
            step.status = "error"
            raise
        finally:
            step.duration_ms = round((time.perf_counter() - began) * 1000)
            self.steps.append(step)
            self.listener(step)

    def add(self, agent: str, kind: str, **values: Any) -> Step:
        """A step that took no time of its own."""
        with self.step(agent, kind, **values) as step:
            return step

    def as_dicts(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.steps]


def steps_from_dicts(data: Sequence[dict[str, Any]]) -> list[Step]:
    return [step_from_dict(d) for d in data]
