"""A Celery app for the dead-letter test: the platform's app plus one task that kills the pool
process running it, as an out-of-memory kill or a crashing parser would."""

from __future__ import annotations

import os
import signal

from medxiaohe.common.settings import Settings
from medxiaohe_services.worker.app import make_app

app = make_app(Settings.from_env())


@app.task(name="tests.crash", shared=False)  # type: ignore[untyped-decorator]
def crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
