"""Cooperative cancellation of work that runs in a thread.

A thread cannot be stopped from outside, so a call whose caller has gone (its deadline passed,
it cancelled) would run to its end. The service runtime runs such work in a cancellation scope
and sets its token when the call ends early; long loops in the library call ``check()`` now and
then, which raises ``Cancelled`` once the token is set, and the thread stops there. Outside a
scope ``check()`` costs a context-variable read and never raises."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

CHECK_EVERY = 256  # iterations of a per-item loop between two checks

_token: ContextVar[threading.Event | None] = ContextVar("medxiaohe_cancel", default=None)


class Cancelled(Exception):
    """The work's caller has gone; nobody will read its result."""


def check() -> None:
    """Raise Cancelled if the current scope's token is set."""
    token = _token.get()
    if token is not None and token.is_set():
        raise Cancelled("the call that asked for this work has ended")


def scoped(token: threading.Event, work: Callable[P, T]) -> Callable[P, T]:
    """``work`` run with ``token`` as the current scope's (for the thread that runs it)."""

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        _token.set(token)
        return work(*args, **kwargs)

    return run
