"""Render the Helm chart without helm or a cluster, and validate every object strictly.

Built-in kinds are checked with kubernetes-validate in strict mode (unknown fields fail);
KServe resources against the KServe CRD schemas shipped beside this module (``schemas/``, copied
unchanged from KServe; see its SOURCE.md). The chart ships beside it too (``chart/``, a link to the
checkout's charts/medxiaohe), so an installed package renders and validates without a checkout.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).parent
CHART = HERE / "chart"
SCHEMAS = HERE / "schemas"
KUBE_VERSION = "1.33.0"
CRD_FILES = {
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
}


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def render_chart(
    values_files: Iterable[Path] = (),
    values: Mapping[str, Any] | None = None,
    *,
    chart: Path = CHART,
    release: str = "medxiaohe",
    namespace: str = "medxiaohe",
    template: str = "",
) -> list[dict[str, Any]]:
    """The chart's objects for the given values files (in order) and overrides; only those of
    ``template`` (a file name under templates/) when one is named."""
    merged: dict[str, Any] = {}
    for path in values_files:
        merged = deep_merge(merged, yaml.safe_load(path.read_text()) or {})
    merged = deep_merge(merged, values or {})
    loaded = helm.Chart.load(chart)
    full = deep_merge(loaded.values, merged)
    loaded.validate_schema(full)
    rendered = loaded.render(full, name=release, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    for name, text in sorted(rendered.items()):
        if name.endswith("/NOTES.txt"):  # what helm prints after an install, not an object
            continue
        if template and not name.endswith(f"/templates/{template}"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


@functools.cache
def _crd(crd_file: Path) -> Any:
    """A CRD file, parsed once per process with libyaml (the InferenceService's is 2 MB)."""
    return yaml.load(crd_file.read_text(), Loader=yaml.CSafeLoader)


def crd_schema(crd_file: Path, version: str = "") -> dict[str, Any]:
    """The openAPIV3Schema of ``version`` (the first one listed when empty)."""
    crd = _crd(crd_file)
    for entry in crd["spec"]["versions"]:
        version = version or entry["name"]
        if entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"{crd_file.name} has no version {version}")


def validate_object(
    obj: Mapping[str, Any], crds: Mapping[str, dict[str, Any]] | None = None
) -> list[str]:
    """Problems with one object; empty when it is valid. ``crds``: kind -> openAPIV3Schema."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if crds and obj.get("kind") in crds:
        validator = jsonschema.Draft7Validator(crds[obj["kind"]])
        return [f"{name}: {e.json_path}: {e.message}" for e in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(dict(obj), KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}"]
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
        return [f"{name}: no schema: {exc}"]
    return []


def kserve_crds(folder: Path = SCHEMAS) -> dict[str, dict[str, Any]]:
    """Kind -> openAPIV3Schema of the KServe CRDs found in ``folder`` (v1beta1 / v1alpha1)."""
    crds = {}
    for kind, name in CRD_FILES.items():
        path = folder / name
        if path.is_file():
            crds[kind] = crd_schema(path)
    return crds


def check_chart(profiles: Iterable[Path] = ()) -> dict[str, list[str]]:
    """Render the default values and each profile; problems per variant (empty lists: clean).
    KServe objects are checked against the shipped CRDs; without them, the report says which
    objects went unchecked under "unchecked" (not a failure)."""
    report: dict[str, list[str]] = {}
    crds = kserve_crds()
    unchecked: list[str] = []
    lint = helm.lint(CHART, strict=True)
    report["lint"] = [m["error"] for m in lint["messages"] if m["severity"] >= 2] + list(
        lint["errors"]
    )
    for label, files in [("default", []), *[(p.stem, [p]) for p in profiles]]:
        problems: list[str] = []
        try:
            objects = render_chart(files)
        except helm.HelmError as exc:
            report[label] = [f"render failed: {exc}"]
            continue
        for obj in objects:
            if obj.get("apiVersion", "").startswith("serving.kserve.io/") and not crds:
                unchecked.append(f"{label}: {obj['kind']}/{obj['metadata']['name']}")
                continue
            problems.extend(validate_object(obj, crds))
        report[label] = problems
    if unchecked:
        report["unchecked"] = [f"no KServe CRD schemas in {SCHEMAS}", *unchecked]
    return report
