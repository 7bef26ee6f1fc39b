"""The four services, by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from medxiaohe.common.settings import ServiceName, Settings
from medxiaohe.storage import open_store
from medxiaohe_services.evidence import service as evidence
from medxiaohe_services.ingestion import service as ingestion
from medxiaohe_services.report import service as report
from medxiaohe_services.rubric import service as rubric
from medxiaohe_services.runtime.resources import Resources
from medxiaohe_services.runtime.server import Platform, ServiceSpec

BUILDERS: dict[str, Callable[[Resources], ServiceSpec]] = {
    "ingestion": ingestion.build,
    "evidence": evidence.build,
    "report": report.build,
    "rubric": rubric.build,
}


FULL_NAMES: dict[str, str] = {
    "ingestion": ingestion.FULL_NAME,
    "evidence": evidence.FULL_NAME,
    "report": report.FULL_NAME,
    "rubric": rubric.FULL_NAME,
}


def build_platform(settings: Settings, names: Sequence[ServiceName]) -> Platform:
    """The named services over one set of shared resources (one tree, one model, ...)."""
    resources = Resources(settings, open_store(settings.store_uri, settings))
    return Platform(settings, [BUILDERS[name](resources) for name in names])
