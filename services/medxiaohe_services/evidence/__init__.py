"""Evidence retrieval service (medxiaohe.evidence.v1.EvidenceService)."""
