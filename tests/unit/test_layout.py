"""House rules that a test can check: packaging, layering, proto style, module size."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from google.protobuf import descriptor

from medxiaohe_protos.evidence.v1 import evidence_pb2
from medxiaohe_protos.ingestion.v1 import ingestion_pb2
from medxiaohe_protos.report.v1 import report_pb2
from medxiaohe_protos.rubric.v1 import rubric_pb2

ROOT = Path(__file__).resolve().parents[2]
INSTALLED = {"medxiaohe", "medxiaohe_protos", "medxiaohe_services", "medxiaohe_training"}


def test_every_package_is_named_like_its_folder() -> None:
    """Each top folder that pyproject installs from holds packages named like their folders, so
    an import name is where the code is; the benchmarks and tests are not installed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = config["packages"]["find"]["where"]
    found = {
        package.name: root
        for root in roots
        for package in (ROOT / root).iterdir()
        if (package / "__init__.py").is_file()
    }
    assert set(found) == INSTALLED
    assert found["medxiaohe_services"] == "services"
    assert found["medxiaohe_training"] == "training-jobs"
    assert "package-dir" not in config


def test_domain_library_never_imports_transport() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rpcs_are_verb_noun_with_their_own_messages() -> None:
    modules = [ingestion_pb2, evidence_pb2, report_pb2, rubric_pb2]
    services: list[descriptor.ServiceDescriptor] = [
        s for m in modules for s in m.DESCRIPTOR.services_by_name.values()
    ]
    assert len(services) == 4
    for service in services:
        for method in service.methods:
            assert method.input_type.name == f"{method.name}Request"
            assert method.output_type.name == f"{method.name}Response"


def test_modules_stay_small() -> None:
    for folder in ("libs/medxiaohe", "services"):
        for path in (ROOT / folder).rglob("*.py"):
            assert len(path.read_text().splitlines()) <= 500, path


def test_readme_documents_every_setting() -> None:
    from medxiaohe.common.settings import SERVICE_NAMES, Settings

    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        if name not in SERVICE_NAMES:
            assert f"`MEDXIAOHE_{name.upper()}`" in readme, name


def test_constraints_pin_every_declared_dependency_at_its_version() -> None:
    """constraints.txt (what CI and the images install with) agrees with pyproject's pins, and
    every extra's dependency is pinned: `make lock` was run after the last change."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared.extend(d for d in extra if not d.startswith("medxiaohe["))
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pinned = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    pinned = {_normal(name): version for name, version in pinned.items()}
    for requirement in declared:
        name, version = requirement.split("==")
        assert pinned.get(_normal(name.split("[")[0])) == version, requirement


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
