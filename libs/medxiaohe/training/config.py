"""Stage configs: one dataclass per stage, help text on every field (TRL's pattern), read from
YAML with command-line overrides through transformers' HfArgumentParser, validated at start."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medxiaohe.common.errors import InvalidInput

Config = TypeVar("Config")


@dataclass
class RunConfig:
    """Fields every stage has."""

    run_id: str = field(
        default="", metadata={"help": "Run id; a new one when empty. Re-use it to resume."}
    )
    resume: bool = field(
        default=False,
        metadata={"help": "Without a run_id, resume the newest unfinished run of this stage."},
    )
    store_uri: str = field(
        default="", metadata={"help": "Object store root; MEDXIAOHE_STORE_URI when empty."}
    )
    seed: int = field(default=42, metadata={"help": "Random seed."})
    save_steps: int = field(
        default=200, metadata={"help": "Save a checkpoint every this many steps."}
    )
    deepspeed: str = field(default="", metadata={"help": "'zero2', 'zero3', or empty for none."})
    report_to: str = field(
        default="none",
        metadata={
            "help": "Where the Trainer reports: none, tensorboard or mlflow (comma-separated)."
        },
    )

    def __post_init__(self) -> None:
        if not set(self.report_to.split(",")) <= {"none", "tensorboard", "mlflow"}:
            raise InvalidInput("report_to must be none, tensorboard or mlflow (comma-separated)")
        if self.save_steps < 1:
            raise InvalidInput("save_steps must be at least 1")
        if self.deepspeed not in ("", "zero2", "zero3"):
            raise InvalidInput("deepspeed must be 'zero2', 'zero3' or empty")


def _as_args(values: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in values.items():
        args.append(f"--{key}")
        if isinstance(value, list):
            args.extend(str(v) for v in value)
        else:
            args.append(str(value).lower() if isinstance(value, bool) else str(value))
    return args


def load_config(
    kind: type[Config], yaml_path: Path | None = None, overrides: list[str] | None = None
) -> Config:
    """The stage config from a YAML file, then ``--key value`` overrides; InvalidInput names
    any unknown key and any value that does not parse."""
    values = read_mapping(yaml_path) if yaml_path is not None else {}
    return config_from(kind, values, overrides)


def read_mapping(path: Path) -> dict[str, Any]:
    """A YAML file that holds a mapping; InvalidInput otherwise."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read config {path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise InvalidInput(f"{path} must hold a mapping of config keys")
    return loaded


def config_from(
    kind: type[Config], values: dict[str, Any], overrides: list[str] | None = None
) -> Config:
    """The stage config from a mapping of its keys, then ``--key value`` overrides."""
    from transformers import HfArgumentParser

    known = {f.name for f in fields(kind)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidInput(f"unknown config keys {unknown}; known: {sorted(known)}")
    parser = HfArgumentParser(kind, prog="medxiaohe-train")  # type: ignore[arg-type]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            (config,) = parser.parse_args_into_dataclasses(
                args=_as_args({k: v for k, v in values.items() if v != []}) + list(overrides or [])
            )
        # an empty list has no command-line form: set it after parsing (validated again)
        given = set(overrides or [])
        empty: dict[str, list[Any]] = {
            k: [] for k, v in values.items() if v == [] and f"--{k}" not in given
        }
        config = dataclasses.replace(config, **empty) if empty else config
    except SystemExit:
        message = errors.getvalue().strip().splitlines()
        raise InvalidInput(message[-1] if message else "invalid config") from None
    except ValueError as exc:  # overrides naming keys the stage does not have
        raise InvalidInput(f"unknown config keys in overrides: {exc}") from None
    return config


def config_help(kind: type[Any]) -> dict[str, str]:
    """Field name -> help text; every field must have one."""
    return {f.name: f.metadata.get("help", "") for f in fields(kind)}
