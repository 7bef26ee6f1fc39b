"""Rubric scoring: HealthBench-compatible rubrics, graders, dynamic report rubrics, RL rewards."""
