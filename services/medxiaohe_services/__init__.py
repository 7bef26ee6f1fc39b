"""Thin transport adapters over the medxiaohe library: gRPC services, the Celery worker, the CLI.

Installed as the ``medxiaohe_services`` package (see pyproject.toml).
"""
