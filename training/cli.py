"""`python -m training {sft,reward-model,reinforce} --config FILE.json`.

One JSON line of metrics per logged step on stdout, and last a JSON object of the final
metrics and the trained model's directory. A bad config or bad data is reported on
stderr before any work, with exit code 2; a diverged run exits with 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from model_service.checkpoints import CheckpointError
from training.config import ConfigError
from training.data import DataError
from training.jobs import JOBS, configure, run
from training.loop import TrainingDiverged

USAGE_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m training", description="Train Gemma models."
    )
    commands = parser.add_subparsers(dest="job", required=True)
    for kind in JOBS:
        command = commands.add_parser(kind, help=f"run a {kind} job")
        command.add_argument("--config", required=True, help="JSON config file")
    args = parser.parse_args(argv)
    try:
        config = configure(args.job, args.config)
        run(args.job, config, on_metrics=_print_line)
    except (ConfigError, DataError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _print_line(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)
