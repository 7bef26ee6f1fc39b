"""Work in a thread stops when the call that awaits it ends first."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from medxiaohe.common import cancel
from medxiaohe_services.runtime.threads import in_thread


def test_work_in_a_thread_stops_when_its_call_ends_first() -> None:
    stopped = threading.Event()
    steps: list[int] = []

    def work() -> None:
        try:
            for i in range(10_000):  # 10 s or more, were it not stopped
                cancel.check()
                steps.append(i)
                time.sleep(0.001)
        finally:
            stopped.set()

    async def call() -> None:
        await asyncio.wait_for(in_thread(work), 0.05)

    with pytest.raises(TimeoutError):
        asyncio.run(call())
    assert stopped.wait(10)
    assert 0 < len(steps) < 10_000
    cancel.check()  # outside a scope it never raises

    async def finished() -> int:
        return await in_thread(lambda: len(steps))

    assert asyncio.run(finished()) == len(steps)  # a call that waits gets the result
