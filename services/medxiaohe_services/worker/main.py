"""Entry point for ``celery -A medxiaohe_services.worker.main worker``: settings read here, once."""

from __future__ import annotations

from medxiaohe.common.logs import setup_logging
from medxiaohe.common.settings import Settings
from medxiaohe_services.worker.app import make_app

settings = Settings.from_env()
setup_logging(settings.log_level)
app = make_app(settings)
