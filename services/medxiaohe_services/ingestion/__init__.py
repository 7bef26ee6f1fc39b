"""Ingestion and entity-tagging service (medxiaohe.ingestion.v1.IngestionService)."""
