"""Run the predictor: KServe's ModelServer (REST v1/v2 on the HTTP port, gRPC v2) plus the
OpenAI-compatible chat route. It blocks until SIGTERM/SIGINT."""

from __future__ import annotations

from medxiaohe.common.settings import Settings
from medxiaohe_services.model.openai import add_routes
from medxiaohe_services.model.predictor import VlmPredictor


def serve(uri: str, name: str, http_port: int, grpc_port: int, settings: Settings) -> None:
    import kserve
    from kserve.model_server import app

    predictor = VlmPredictor(name, uri, settings)
    predictor.load()
    add_routes(app, predictor)
    kserve.ModelServer(http_port=http_port, grpc_port=grpc_port).start([predictor])
