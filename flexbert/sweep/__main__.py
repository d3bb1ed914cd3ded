"""`python -m flexbert.sweep SWEEP.yaml [--dry-run] [--script OUT.sh] [--metric KEY] [--report-only]`.

Without flags: run every unfinished run locally, one after another, then write results.csv,
report.md and plots/ into the sweep's output folder. Rerunning skips finished runs and resumes
interrupted ones. Exit status: 0 when every run finished, 1 when some failed, 2 on a sweep-file
error, 130 on Ctrl-C (the interrupted run resumes next time).
"""
from __future__ import annotations

import argparse
import shlex
import sys

from flexbert.errors import ConfigError
from flexbert.outputs import check_output_dir, check_output_file
from flexbert.sweep.collect import collect, status_of
from flexbert.sweep.expand import expand, launch_argv
from flexbert.sweep.report import write_report
from flexbert.sweep.runner import run_sweep, validate_runs, write_script
from flexbert.sweep.spec import load_sweep, with_metric


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flexbert.sweep", description=__doc__.splitlines()[0])
    p.add_argument("sweep", help="sweep YAML, e.g. yamls/ablations/blocks.yaml")
    p.add_argument("--dry-run", action="store_true", help="list the runs, their state and command lines; run nothing")
    p.add_argument("--script", metavar="OUT.sh", help="write one launch command per run (for a scheduler) instead of running")
    p.add_argument("--metric", help="rank by this metric instead of the file's (e.g. eval_accuracy, best_eval_loss)")
    p.add_argument("--maximize", action="store_true", default=None, help="with --metric: higher is better")
    p.add_argument("--report-only", action="store_true", help="collect what the runs left and write the report; run nothing")
    p.add_argument("--only", action="append", metavar="NAME", help="run only runs whose name contains NAME (repeatable)")
    p.add_argument("--verbose", action="store_true", help="also print the training output (it always goes to each run's train.log)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        sweep = load_sweep(args.sweep)
        if args.metric:
            sweep = with_metric(sweep, args.metric, args.maximize)
        runs = expand(sweep)
        if args.only:
            runs = [r for r in runs if any(part in r.name for part in args.only)]
            if not runs:
                raise ConfigError(f"--only {args.only} matches no run of {args.sweep}; see --dry-run for the names")
        if not args.report_only:
            validate_runs(sweep, runs)
        # Outputs are checked before anything runs: never the sweep file or its base, never a file for a folder.
        inputs = [("sweep file", args.sweep), ("base", sweep.base)]
        if args.script:
            check_output_file(args.script, inputs=inputs, name="--script")
        elif not args.dry_run:
            check_output_dir(sweep.output, inputs=inputs, replaces=False, name="output")
    except (ConfigError, ValueError) as e:
        print(f"sweep error: {e}", file=sys.stderr)
        return 2

    n_variants = len({r.variant for r in runs})
    print(f"sweep {sweep.name}: {len(runs)} runs ({n_variants} variants x {len(sweep.spec.seeds)} seeds) -> {sweep.output}")
    if args.dry_run:
        for i, run in enumerate(runs, 1):
            print(f"[{i}/{len(runs)}] {run.name} ({status_of(run.run_dir)})\n    {shlex.join(launch_argv(sweep, run))}")
        return 0
    if args.script:
        write_script(sweep, runs, args.script)
        print(f"wrote {args.script}: {len(runs)} launch lines")
        return 0
    failed = 0
    if not args.report_only:
        try:
            counts = run_sweep(sweep, runs, echo_output=args.verbose)
        except KeyboardInterrupt:
            print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
            return 130
        failed = counts["failed"]
        print(f"runs: {counts['done']} finished now, {counts['skipped']} finished earlier, {failed} failed")
    paths = write_report(sweep, collect(sweep, expand(sweep)))
    print(f"report: {paths['report']}\nresults: {paths['csv']}" + (f"\nplots: {paths['plots']}" if paths["plots"] else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
