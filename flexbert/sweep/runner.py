"""Run a sweep locally, one run after another, or write it as a shell script for a scheduler.

The state of a run lives in its folder, so a sweep can be stopped and started again at will:
- `DONE` (JSON: exit code 0, wall time, attempts, the collected metrics): finished, skipped.
- `FAILED` (JSON: exit code and the log's last lines): the run is retried next time.
- neither, but the folder has content: interrupted; rerun with the same save_folder and
  `autoresume=true` (always passed), so Composer continues from the last checkpoint.
A failed run does not stop the sweep; the report lists it with its log tail.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Optional

from flexbert.errors import ConfigError
from flexbert.outputs import atomic_write_json, atomic_write_text
from flexbert.sweep.collect import collect_run, status_of
from flexbert.sweep.expand import RunPlan, format_value, launch_argv, script_line
from flexbert.sweep.io import read_json
from flexbert.sweep.spec import Sweep

__all__ = ["validate_runs", "run_sweep", "run_one", "run_downstream", "write_script", "LOG_TAIL_LINES"]

LOG_TAIL_LINES = 30
CHECKPOINT = "latest-rank0.pt"  # Composer's symlink to the newest checkpoint of rank 0


def _write_marker(path: str, obj) -> None:
    """A run's JSON marker (attempts.json, DONE, FAILED, downstream.json): sorted keys, anything else as str."""
    atomic_write_json(path, obj, sort_keys=True, default=str)


def validate_runs(sweep: Sweep, runs: list[RunPlan]) -> None:
    """Load each variant's config with FlexBERT's strict loader; raise naming the run on error."""
    if not sweep.spec.validate:
        return
    from flexbert.train.loading import load_run  # import cost: torch loads only when FlexBERT runs are validated

    seen = set()
    for run in runs:
        if run.variant in seen:
            continue
        seen.add(run.variant)
        try:
            load_run(sweep.base, [f"{k}={format_value(v)}" for k, v in run.overrides])
        except ConfigError as e:
            raise ConfigError(
                f"run '{run.variant}' of sweep {sweep.source}: {e} (set `validate: false` for a non-FlexBERT command)"
            ) from None


def _tail(path: str, n: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def _attempts(run_dir: str) -> list[dict[str, Any]]:
    path = os.path.join(run_dir, "attempts.json")
    return read_json(path) if os.path.isfile(path) else []


def run_one(sweep: Sweep, run: RunPlan, *, echo_output: bool = False) -> dict[str, Any]:
    """Launch one run, tee its output to <run_dir>/train.log, write DONE or FAILED.

    Returns the attempt record (`exit_code`, `seconds`). Ctrl-C stops the child and leaves
    the run unmarked (interrupted), so the next invocation resumes it.
    """
    os.makedirs(run.run_dir, exist_ok=True)
    failed = os.path.join(run.run_dir, "FAILED")
    if os.path.exists(failed):
        os.unlink(failed)
    argv = launch_argv(sweep, run)
    attempts = _attempts(run.run_dir)
    log_path = os.path.join(run.run_dir, "train.log")
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # stream the child's output into the log as it comes
    start = time.time()
    # Append: an autoresumed run keeps the earlier attempts' output above a separator.
    with open(log_path, "a", buffering=1, errors="replace") as log:
        log.write(f"# flexbert.sweep attempt {len(attempts) + 1} at {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(argv)}\n")
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env)
        except OSError as e:  # the command itself is missing: a failed run, not a crashed sweep
            log.write(f"cannot start {argv[0]!r}: {e}\n")
            code = 127
        else:
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    log.write(line)
                    if echo_output:
                        sys.stdout.write(line)
                code = proc.wait()
            except KeyboardInterrupt:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                log.write("# flexbert.sweep: interrupted (Ctrl-C); rerun the sweep to resume\n")
                raise
    attempt = {"started": start, "seconds": round(time.time() - start, 3), "exit_code": code}
    attempts.append(attempt)
    _write_marker(os.path.join(run.run_dir, "attempts.json"), attempts)
    if code == 0:
        summary = collect_run(sweep, run)
        metrics = {k: v for k, v in summary.items() if k not in ("eval_curve", "error", "status", "exit_code", "wall_time_s")}
        _write_marker(os.path.join(run.run_dir, "DONE"), {
            "exit_code": 0,
            "wall_time_s": round(sum(a["seconds"] for a in attempts), 3),
            "attempts": len(attempts),
            "metrics": metrics,
        })
    else:
        _write_marker(failed, {"exit_code": code, "attempts": len(attempts), "log_tail": _tail(log_path)})
    return attempt


def run_downstream(sweep: Sweep, run: RunPlan) -> Optional[float]:
    """Run the `downstream` command for a finished run; store {"score": ...} in downstream.json.

    The command is a shell template with {run_dir}, {checkpoint} and {run_name} (inserted
    shell-quoted); the last line of its stdout that parses as a JSON object with a "score"
    is the result. Output goes to <run_dir>/downstream.log. Returns the score or None.
    """
    template = sweep.spec.downstream
    assert template
    values = {
        "run_dir": shlex.quote(run.run_dir),
        "checkpoint": shlex.quote(os.path.join(run.run_dir, CHECKPOINT)),
        "run_name": shlex.quote(run.name),
    }
    try:
        command = template.format(**values)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"'downstream' in {sweep.source} ({template!r}): bad placeholder {e}; use {{run_dir}}, {{checkpoint}}, {{run_name}}") from None
    proc = subprocess.run(command, shell=True, capture_output=True, text=True, errors="replace")
    atomic_write_text(os.path.join(run.run_dir, "downstream.log"), f"$ {command}\n{proc.stdout}{proc.stderr}")
    result = None
    for line in reversed(proc.stdout.splitlines()):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "score" in obj:
            result = obj
            break
    if proc.returncode != 0 or result is None:
        return None
    _write_marker(os.path.join(run.run_dir, "downstream.json"), result)
    return result["score"]


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run_sweep(sweep: Sweep, runs: list[RunPlan], *, echo: Callable[[str], None] = print, echo_output: bool = False) -> dict[str, int]:
    """Run every unfinished run in order; return counts of done/failed/skipped runs."""
    counts = {"done": 0, "failed": 0, "skipped": 0}
    n = len(runs)
    for i, run in enumerate(runs, 1):
        prefix = f"[{i}/{n}] {run.name}"
        state = status_of(run.run_dir)
        if state == "done":
            counts["skipped"] += 1
            echo(f"{prefix}: finished earlier, skipped")
        else:
            verb = {"pending": "starting", "incomplete": "resuming (autoresume)", "failed": "retrying after a failure"}[state]
            echo(f"{prefix}: {verb}; log: {os.path.join(run.run_dir, 'train.log')}")
            attempt = run_one(sweep, run, echo_output=echo_output)
            if attempt["exit_code"] != 0:
                counts["failed"] += 1
                tail = _tail(os.path.join(run.run_dir, "train.log"), 5).rstrip()
                echo(f"{prefix}: FAILED (exit {attempt['exit_code']}) after {attempt['seconds']:.0f}s; last lines:\n{tail}")
                continue
            counts["done"] += 1
            metrics = read_json(os.path.join(run.run_dir, "DONE")).get("metrics", {})
            metric = sweep.spec.metric
            echo(f"{prefix}: done in {attempt['seconds']:.0f}s, {metric} {_fmt(metrics.get(metric))}")
        if sweep.spec.downstream and not os.path.isfile(os.path.join(run.run_dir, "downstream.json")):
            score = run_downstream(sweep, run)
            where = os.path.join(run.run_dir, "downstream.log")
            echo(f"{prefix}: downstream score {_fmt(score)}" if score is not None else f"{prefix}: downstream FAILED; see {where}")
    return counts


def write_script(sweep: Sweep, runs: list[RunPlan], path: str) -> None:
    """Write one self-contained launch line per run (for a scheduler's job array or plain bash)."""
    lines = [
        "#!/usr/bin/env bash",
        f"# Sweep '{sweep.name}' from {sweep.source}: {len(runs)} runs, one self-contained command per line.",
        "# Run from the repository root. Every line can be its own job (e.g. a job array picking line",
        "# N with `grep -v '^#' THIS.sh | sed -n Np | bash`); each run autoresumes from its save_folder",
        f"# and is marked DONE on success. Afterwards: python -m flexbert.sweep {shlex.quote(sweep.source)} --report-only",
    ]
    lines += [script_line(sweep, run) for run in runs]
    atomic_write_text(path, "\n".join(lines) + "\n", mode=0o777)  # executable, less the umask
