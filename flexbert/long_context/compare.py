"""Compare probe results of several runs (e.g. the phases of a chain): a markdown table and a plot.

    python -m flexbert.long_context.compare RESULT [RESULT ...] --output DIR [--label A --label B ...]

RESULT: a results.json, a folder holding one, or a training save folder whose `long_context`
callback wrote `<save_folder>/long_context/results.json`. Writes DIR/comparison.md,
DIR/comparison.png and DIR/comparison.json (label -> flat scores), each atomically. Runs whose
probe settings or held-out data differ (settings_digest) are flagged in the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence
from flexbert.long_context.plotting import plot_comparison
from flexbert.long_context.tables import comparison_markdown
from flexbert.outputs import atomic_write_json, atomic_write_text, check_output_dir

__all__ = ["find_results", "load_results", "probe_score", "compare", "main"]


def find_results(path: str | os.PathLike) -> Path:
    """The results.json meant by `path` (a file, a folder holding one, or a save folder)."""
    p = Path(path)
    for candidate in (p, p / "results.json", p / "long_context" / "results.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{p}: no results.json here, nor in {p / 'long_context'}; pass a results file, "
                            "the CLI's --output folder, or a save folder where the long_context callback ran")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    with open(find_results(path)) as f:
        return json.load(f)


def probe_score(run_dir: str | os.PathLike, metric: str) -> Optional[float]:
    """A probe figure of a run for the sweep report: `long_context/<key>` -> scores[<key>] of
    `<run_dir>/long_context/results.json` (written by the callback, or by the CLI with
    `--output <run_dir>/long_context`); None when the file or the figure is missing or unreadable."""
    key = metric[len("long_context/"):] if metric.startswith("long_context/") else metric
    path = Path(run_dir) / "long_context" / "results.json"
    try:
        value = json.loads(path.read_text()).get("scores", {}).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compare(runs: Sequence[tuple[str, dict[str, Any]]], out_dir: str | os.PathLike, title: str = "") -> dict[str, str]:
    """Write comparison.md / .png / .json for labelled results; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": str(out / "comparison.md"), "plot": str(out / "comparison.png"),
             "json": str(out / "comparison.json")}
    plot_comparison(runs, paths["plot"], title=title)
    atomic_write_text(paths["markdown"], comparison_markdown(runs))
    atomic_write_json(paths["json"], {label: res.get("scores", {}) for label, res in runs})
    return paths


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flexbert.long_context.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", metavar="RESULT", help="results.json, a folder with one, or a save folder")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for comparison.md / .png / .json")
    p.add_argument("--label", action="append", dest="labels", metavar="LABEL",
                   help="a run's label, once per RESULT in the same order (default: the folder names)")
    p.add_argument("--title", default="", help="plot title")
    args = p.parse_args(argv)
    try:
        labels = args.labels
        if labels is not None and len(labels) != len(args.results):
            raise ValueError(f"--label given {len(labels)} times for {len(args.results)} results; give one per RESULT")
        files = [find_results(r) for r in args.results]
        if labels is None:  # the save folder's name, skipping the fixed `long_context` folder
            labels = [(f.parent.parent if f.parent.name == "long_context" else f.parent).name for f in files]
        runs = [(label, json.loads(f.read_text())) for label, f in zip(labels, files)]

        check_output_dir(args.output, inputs=[("RESULT", [str(f) for f in files])], replaces=False, name="--output")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = compare(runs, args.output, args.title)
    print(Path(paths["markdown"]).read_text())
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
