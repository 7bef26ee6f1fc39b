"""Indexes by name, loaded from the store and kept current: a newly published version is
loaded beside the old one, which keeps answering until the swap, so no request fails."""

from __future__ import annotations

import logging
import threading
import time

from medxiaohe.common.errors import NotFound
from medxiaohe.evidence.index import EvidenceIndex, artifact_prefix
from medxiaohe.storage import ArtifactStore, latest_version

log = logging.getLogger(__name__)


class IndexRegistry:
    """Indexes load on first use; a newer version loads in a thread of its own. ``stop`` ends
    the refreshes (the platform calls it when it stops); ``start`` has nothing to start."""

    def __init__(self, store: ArtifactStore, refresh_s: float = 5.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._latest: dict[str, EvidenceIndex] = {}
        self._checked: dict[str, float] = {}
        self._pinned: dict[tuple[str, str], EvidenceIndex] = {}
        self._lock = threading.Lock()
        self._loading: set[str] = set()
        self._refreshes: list[threading.Thread] = []
        self._stopped = False

    def start(self) -> None:
        """Nothing loads before it is asked for."""

    def stop(self, timeout: float = 30.0) -> None:
        """No new refreshes; waits for those in flight."""
        with self._lock:
            self._stopped = True
            refreshes = list(self._refreshes)
        for thread in refreshes:
            thread.join(timeout)

    def get(self, name: str, version: str = "") -> EvidenceIndex:
        """The named index: a pinned version, or the latest published one."""
        if version:
            key = (name, version)
            if key not in self._pinned:
                self._pinned[key] = EvidenceIndex.load(self.store, name, version)
            return self._pinned[key]
        current = self._latest.get(name)
        if current is None:
            with self._lock:
                if name not in self._latest:
                    self._latest[name] = EvidenceIndex.load(self.store, name)
                    self._checked[name] = time.monotonic()
            return self._latest[name]
        if time.monotonic() - self._checked.get(name, 0.0) > self.refresh_s:
            self._checked[name] = time.monotonic()
            self._refresh_in_background(name, current.version)
        return current

    def _refresh_in_background(self, name: str, serving: str) -> None:
        try:
            newest = latest_version(self.store, artifact_prefix(name))
        except NotFound:
            return
        with self._lock:
            if newest == serving or name in self._loading or self._stopped:
                return
            self._loading.add(name)

        def load() -> None:
            try:
                self._latest[name] = EvidenceIndex.load(self.store, name, newest)
                log.info("index version loaded", extra={"key": name, "version": newest})
            except Exception as exc:  # the old version keeps serving
                log.warning(
                    "index reload failed", extra={"key": name, "reason": type(exc).__name__}
                )
            finally:
                self._loading.discard(name)

        thread = threading.Thread(target=load, name=f"index-{name}", daemon=True)
        with self._lock:
            self._refreshes = [t for t in self._refreshes if t.is_alive()] + [thread]
        thread.start()
