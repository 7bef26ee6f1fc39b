"""The unit that flows through the pipeline."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from medxiaohe.entities.tagger import Mention


@dataclass
class Record:
    """Readers fill in what the source says; the de-identification step then replaces ``id`` and
    ``patient_key`` (the source's own identifiers) with keyed pseudonyms, cleans ``text``,
    ``metadata`` and the reason of a record dropped before it, and seals the result. The shard
    writer checks the seal against what it is about to write and refuses any other record."""

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
    # the fingerprint of the stored fields, and the drop reason, as de-identification left them
    sealed: str = ""
    sealed_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """SHA-256 of the whitespace- and case-normalized text (exact dedup key)."""
        normalized = " ".join(self.text.lower().split())
        return hashlib.sha256(normalized.encode()).hexdigest()

    def fingerprint(self) -> str:
        """SHA-256 over every stored field that can carry PHI, the drop reason and the mentions
        (which later steps set) aside."""
        digest = hashlib.sha256()
        fields = (self.id, self.source, self.kind, self.text, self.patient_key, self.licence)
        for value in (*fields, self.quarantine, *self.known_phi):
            digest.update(value.encode() + b"\0")
        for key, value in sorted(self.metadata.items()):
            digest.update(f"{key}={value}".encode() + b"\0")
        for name, data in sorted(self.attachments.items()):
            digest.update(name.encode() + hashlib.sha256(data).digest())
        return digest.hexdigest()

    def seal(self) -> None:
        """Mark what de-identification left: the shard writer stores nothing else."""
        self.sealed, self.sealed_reason = self.fingerprint(), self.dropped

    def unsealed(self) -> str:
        """What in the record did not come out of de-identification ("" when nothing): a field
        changed after it, a drop reason set before it and changed since, or a mention that is
        not a span of the text."""
        if not self.sealed:
            return "the record did not pass de-identification"
        if self.fingerprint() != self.sealed:
            return "a field changed after de-identification"
        if self.sealed_reason and self.dropped != self.sealed_reason:
            return "the drop reason changed after de-identification"
        if any(self.text[m.start : m.end] != m.text for m in self.mentions):
            return "a mention is not a span of the de-identified text"
        return ""
