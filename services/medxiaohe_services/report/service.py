"""Wiring of the report service into the runtime.

Health is truthful: NOT_SERVING until the model answers (an endpoint, or the in-process model
loaded), the entity tree is loaded and the shipped templates are in the store."""

from __future__ import annotations

from medxiaohe.common.errors import NotReady
from medxiaohe.common.secrets import required_secret
from medxiaohe.report.style import publish_builtin_templates
from medxiaohe_protos.report.v1 import report_pb2, report_pb2_grpc
from medxiaohe_services.report.review_app import create_app
from medxiaohe_services.report.servicer import ReportServicer
from medxiaohe_services.runtime.models import model_endpoint
from medxiaohe_services.runtime.resources import Resources
from medxiaohe_services.runtime.server import ServiceSpec, once

FULL_NAME = report_pb2.DESCRIPTOR.services_by_name["ReportService"].full_name


def no_model() -> None:
    raise NotReady("no model: set MEDXIAOHE_REPORT_MODEL_URL or MEDXIAOHE_LOCAL_MODEL_URI")


def build(resources: Resources) -> ServiceSpec:
    settings, store = resources.settings, resources.store
    model = model_endpoint(
        resources,
        settings.report_model_url,
        settings.report_model_name,
        settings.report_model_api_key.get_secret_value(),
    )
    # the tree comes from the store: `medxiaohe met build`, or the embedded ingestion service
    tagging = resources.tagging
    servicer = ReportServicer(
        store,
        model,
        tagging,
        resources.indexes,
        settings.report_evidence_index,
        required_secret(settings).encode(),
        settings.report,
        settings.report_max_concurrent,
    )
    web = create_app(
        store,
        servicer.keys,
        resources.indexes,
        settings.report.allow,
        {name: token.get_secret_value() for name, token in settings.review_tokens.items()},
    )
    return ServiceSpec(
        name="report",
        full_name=FULL_NAME,
        register=lambda server: report_pb2_grpc.add_ReportServiceServicer_to_server(
            servicer, server
        ),
        checks=(
            store.ping,
            model.check if model else no_model,
            tagging.check,
            once(lambda: publish_builtin_templates(store)),
        ),
        loaders=(tagging, resources.indexes, *(model.loaders if model else ())),
        web=web,  # the review app, where settings.review_port serves it
    )
