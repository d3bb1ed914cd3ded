"""Train a FlexBERT encoder from a run YAML: `flexbert-train RUN.yaml [dotted.key=value ...] [--dry-run]`.

The same command as `python train.py` / `composer train.py` in a checkout and
`python -m flexbert.train` / `composer -m flexbert.train` where flexbert is installed. This
module only wires: the config is loaded and validated by `flexbert.train.loading` (on
`flexbert.config.loading`),
everything is built by `flexbert.train.builder`, and `--dry-run` (`flexbert.train.dryrun`)
prints the resolved config, model size, FLOPs per token and the schedules over the run
without training.
"""
from __future__ import annotations

import argparse
import sys

from flexbert.data.errors import DataError
from flexbert.errors import ConfigError
from flexbert.train.builder import build_trainer, finish_run
from flexbert.train.dryrun import dry_run_report
from flexbert.train.loading import load_run
from flexbert.train.run_checks import check_run


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("config", help="run YAML, e.g. yamls/demo.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. optimizer.lr=1e-3")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and schedules, do not train")
    args = parser.parse_intermixed_args(argv)  # flags and overrides in any order
    try:
        loaded = load_run(args.config, args.overrides)
        if args.dry_run:
            print(dry_run_report(loaded))
            check_run(loaded.cfg, loaded.model_cfg, loaded.source)  # what would stop the run before step 0: exit 2
            return 0
        run = build_trainer(loaded)
    except ConfigError as e:  # a user mistake: one clear line, no traceback
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except DataError as e:  # a missing, truncated or corrupt shard: one line naming it
        print(f"data error: {e}", file=sys.stderr)
        return 2
    try:
        run.trainer.fit()
    except DataError as e:
        print(f"data error: {e}", file=sys.stderr)
        return 2
    finish_run(run)
    return 0

