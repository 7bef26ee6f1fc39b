"""Reading ``.npy`` files from several threads at once.

``np.load`` parses each file's header with ``ast.literal_eval``; under concurrent calls from
threads of one process (the evidence service's writers, 4 at once) it failed with a
``SystemError`` from the parser 2 or 3 times in 10,000 IndexPassages calls of the reliability
benchmark's fuzzing (an INTERNAL error to the caller). Every load goes through one lock — ours
(``load``) and those of libraries that call ``np.load`` themselves (bm25s's index loader, under
``headers()``): a header is short, and loads are rare beside the work they feed."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator

import numpy as np

_LOCK = threading.Lock()


@contextlib.contextmanager
def headers() -> Iterator[None]:
    """Held around code that reads ``.npy`` files with ``np.load`` (one thread at a time)."""
    with _LOCK:
        yield


def load(data: bytes) -> np.ndarray:
    """The array a ``.npy`` file holds (no pickles)."""
    with headers():
        array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    return array
