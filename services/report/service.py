"""Wiring of the report service into the runtime.

Its RPCs are not built yet: the generated base servicer answers UNIMPLEMENTED for each of
them, and the service reports NOT_SERVING (``built=False``), so no caller takes it for ready.
"""

from __future__ import annotations

from medxiaohe.common.settings import Settings
from medxiaohe.storage import ArtifactStore
from medxiaohe_protos.report.v1 import report_pb2, report_pb2_grpc
from medxiaohe_services.runtime.server import ServiceSpec

FULL_NAME = report_pb2.DESCRIPTOR.services_by_name["ReportService"].full_name


def build(settings: Settings, store: ArtifactStore) -> ServiceSpec:
    servicer = report_pb2_grpc.ReportServiceServicer()  # type: ignore[abstract]  # base: UNIMPLEMENTED
    return ServiceSpec(
        name="report",
        full_name=FULL_NAME,
        register=lambda server: report_pb2_grpc.add_ReportServiceServicer_to_server(
            servicer, server
        ),
        checks=(store.ping,),
        built=False,
    )
