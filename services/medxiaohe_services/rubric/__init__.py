"""Rubric scoring service (medxiaohe.rubric.v1.RubricService)."""
