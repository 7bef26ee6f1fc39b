"""``medxiaohe model deploy``: the chart's InferenceService for one model, rendered with the
chart itself (so helm installs and this command agree), validated against KServe's CRD, and
created or updated through the official kubernetes client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm

from medxiaohe.common.errors import InvalidInput
from medxiaohe_services.deploy.manifests import kserve_crds, render_chart, validate_object
from medxiaohe_services.deploy.training import KubernetesLauncher

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


def render_inference_service(
    storage_uri: str, name: str, values_files: list[Path], **model: Any
) -> dict[str, Any]:
    """The InferenceService for a model; raises InvalidInput when it does not validate."""
    values = {"model": {"enabled": True, "name": name, "storageUri": storage_uri, **model}}
    try:
        objects = render_chart(values_files, values)
    except helm.HelmError as exc:  # the chart's values schema refused them
        raise InvalidInput(f"chart values: {exc}") from None
    (isvc,) = [o for o in objects if o["kind"] == "InferenceService"]
    crds = kserve_crds()
    if "InferenceService" not in crds:
        raise InvalidInput("KServe's InferenceService CRD schema is missing: cannot validate")
    if problems := validate_object(isvc, crds):
        raise InvalidInput(f"InferenceService does not validate: {'; '.join(problems)}")
    return isvc


def deploy(launcher: KubernetesLauncher, isvc: dict[str, Any]) -> str:
    """Create the InferenceService, or patch it when one of that name exists; 'created' or
    'updated'."""
    from kubernetes import client

    api = client.CustomObjectsApi(launcher.core.api_client)
    namespace, name = launcher.namespace, isvc["metadata"]["name"]
    isvc = {**isvc, "metadata": {**isvc["metadata"], "namespace": namespace}}
    created = launcher.call(
        api.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, isvc, exists_ok=True
    )
    if created is not None:
        return "created"
    launcher.call(api.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, isvc)
    return "updated"
