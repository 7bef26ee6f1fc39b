"""Blocking work off the event loop, stopped when its call ends first."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from medxiaohe.common import cancel

T = TypeVar("T")


async def in_thread(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in a worker thread. If the call awaiting it ends first (its deadline
    passed, the caller cancelled, the server stops), the work's cancellation token is set, so
    the library's loops stop at their next ``cancel.check()`` instead of running to the end
    for nobody."""
    token = threading.Event()
    try:
        return await asyncio.to_thread(cancel.scoped(token, work), *args)
    except asyncio.CancelledError:
        token.set()
        raise
