"""The unit that flows through the pipeline."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from medxiaohe.entities.tagger import Mention


@dataclass
class Record:
    """Readers fill in what the source says; the de-identification step then replaces ``id`` and
    ``patient_key`` (the source's own identifiers) with keyed pseudonyms, cleans ``text`` and
    ``metadata``, and sets ``deidentified``. The shard writer refuses any other record."""

    id: str
    source: str
    text: str
    kind: str = "document"  # or "study"
    patient_key: str = ""
    licence: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    # Files that go into the store beside the record (e.g. a DICOM rendered to PNG): name -> bytes
    attachments: dict[str, bytes] = field(default_factory=dict)
    image_uris: list[str] = field(default_factory=list)
    # Identifiers the source itself names (patient names from PID-5, a FHIR Patient.name):
    # de-identification removes them wherever they appear in the text.
    known_phi: list[str] = field(default_factory=list)
    mentions: list[Mention] = field(default_factory=list)
    dropped: str = ""  # why the record left the pipeline; empty while it is in
    # why the record is kept apart from the corpus (e.g. a DICOM that may show burned-in PHI)
    quarantine: str = ""
    deidentified: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """SHA-256 of the whitespace- and case-normalized text (exact dedup key)."""
        normalized = " ".join(self.text.lower().split())
        return hashlib.sha256(normalized.encode()).hexdigest()
