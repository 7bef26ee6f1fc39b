"""Evaluation harnesses: one reader and one scorer per task, printed as JSON by the CLI."""
