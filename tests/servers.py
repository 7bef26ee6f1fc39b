"""Real servers for tests on 127.0.0.1: the gRPC platform in a thread, and (from the benchmarks,
which start them too) SeaweedFS."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

from benchmarks.servers import S3_KEY, S3_SECRET, Weed, free_ports, start_weed
from medxiaohe.common.settings import Settings
from medxiaohe_services.runtime.server import Platform, ServiceSpec

__all__ = ["S3_KEY", "S3_SECRET", "PlatformThread", "Weed", "free_ports", "running", "serving"]
__all__ += ["start_weed"]


class PlatformThread:
    """A Platform serving on its own event loop in a background thread."""

    def __init__(self, settings: Settings, specs: list[ServiceSpec]) -> None:
        self.platform = Platform(settings, specs)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> PlatformThread:
        self._thread.start()
        self.port = self.run(self.platform.start())
        return self

    def run(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def __exit__(self, *exc: object) -> None:
        self.run(self.platform.stop(grace=1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def serving(thread: PlatformThread, timeout: float = 120) -> bool:
    """Whether the platform reports SERVING within ``timeout`` (its checks run meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        thread.run(thread.platform.check_once())
        if thread.platform.is_serving():
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def running(settings: Settings, specs: list[ServiceSpec]) -> Iterator[PlatformThread]:
    with PlatformThread(settings, specs) as thread:
        yield thread
