"""``medxiaohe-train <stage> --config FILE.yaml [--key value ...]`` (or
``python -m medxiaohe_training ...``): reads the stage's config, validates it, runs the stage."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import MedxError, NotReady, Unavailable
from medxiaohe.common.logs import setup_logging
from medxiaohe.common.settings import Settings
from medxiaohe.storage import Manifest
from medxiaohe.training.config import RunConfig, config_help, load_config
from medxiaohe_training import cpt, ner, rft, rl, sft, small

STAGES: dict[str, tuple[type[RunConfig], Callable[[Any, Settings], Manifest | None]]] = {
    "ner": (ner.NerConfig, ner.train),
    "cpt": (cpt.CptConfig, cpt.train),
    "sft": (sft.SftConfig, sft.train),
    "rft": (rft.RftConfig, rft.train),
    "rl": (rl.RlConfig, rl.train),
    "small": (small.SmallConfig, small.train),
}

# Exit status of a run that retrying cannot help (a bad config, data that is not there): the
# training Job's podFailurePolicy fails the Job at once on it (and on 2, a usage error), where a
# crash (1, or a signal) is retried up to backoffLimit.
CANNOT_SUCCEED = 3

USAGE = """usage: medxiaohe-train <stage> [--config FILE.yaml] [--key value ...]

stages: {stages}
Run `medxiaohe-train <stage> --help` for the stage's config keys."""


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in STAGES:
        print(USAGE.format(stages=", ".join(STAGES)), file=sys.stderr)
        raise SystemExit(2)
    stage, rest = args[0], args[1:]
    kind, run = STAGES[stage]
    if "--help" in rest or "-h" in rest:
        for name, text in config_help(kind).items():
            print(f"  --{name:<24} {text}")
        return
    config_path = None
    if "--config" in rest:
        at = rest.index("--config")
        if at + 1 == len(rest):
            print("medxiaohe-train: --config needs a file", file=sys.stderr)
            raise SystemExit(2)
        config_path = Path(rest[at + 1])
        rest = rest[:at] + rest[at + 2 :]
    settings = Settings.from_env()
    setup_logging(settings.log_level)
    try:
        config = load_config(kind, config_path, rest)
        manifest = run(config, settings)
    except MedxError as exc:
        print(f"medxiaohe-train {stage}: {exc}", file=sys.stderr)
        passing = isinstance(exc, Unavailable | NotReady)  # a store or peer that may come back
        raise SystemExit(1 if passing else CANNOT_SUCCEED) from None
    if manifest is not None:
        print(f"published {manifest.prefix}/{manifest.version}")


if __name__ == "__main__":
    main()
