"""CLI: fine-tune a FlexBERT checkpoint and print validation/test metrics plus the majority baseline.

    python -m flexbert.finetune --checkpoint runs/demo/latest-rank0.pt \
        --train data/demo/tasks/prose_vs_code/train.jsonl \
        --validation data/demo/tasks/prose_vs_code/validation.jsonl \
        --test data/demo/tasks/prose_vs_code/test.jsonl --epochs 3 --output runs/finetune/pvc

The last stdout line is one JSON object for sweep runners:
``{"downstream": {"metric": "accuracy", "value": 0.91, "split": "test"}, "score": 0.91}``
(`score` repeats the value for flexbert.sweep, which reads the last line holding "score").
Bad input (data, config, checkpoint, tokenizer) exits with status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from flexbert.config.strict import ConfigError, decode
from flexbert.config.strict import to_plain
from flexbert.finetune.config import FinetuneConfig
from flexbert.outputs import check_output_dir

# CLI flag -> FinetuneConfig field; a flag left out keeps the dataclass default.
_FLAGS = [
    ("--checkpoint", str, "Composer .pt (config.yaml beside it), FlexBERT folder or HF ModernBERT folder"),
    ("--train", str, "CSV (header) or JSONL training file"),
    ("--validation", str, "CSV or JSONL file; picks the best epoch"),
    ("--test", str, "CSV or JSONL file scored with the best epoch's weights"),
    ("--text-field", str, "default: text"),
    ("--text-pair-field", str, "second text of a pair (e.g. hypothesis)"),
    ("--label-field", str, "default: label"),
    ("--task", str, "classification (default) or regression"),
    ("--tokenizer", str, "tokenizer folder (default: beside the checkpoint / from its config.yaml)"),
    ("--epochs", int, "default: 3"),
    ("--batch-size", int, "default: 32"),
    ("--eval-batch-size", int, "default: 64"),
    ("--max-seq-len", int, "default: 512 (longer inputs are truncated and counted)"),
    ("--lr", float, "peak learning rate (default 5e-5)"),
    ("--optimizer", str, "stable_adamw (default) or adamw"),
    ("--weight-decay", float, "decoupled, per step at peak LR (default 1e-5)"),
    ("--warmup-fraction", float, "fraction of steps for linear warmup (default 0.1)"),
    ("--pooling", str, "cls or mean (default: the checkpoint's)"),
    ("--select-metric", str, "metric picking the best epoch (default accuracy / spearman)"),
    ("--output", str, "folder for results.json"),
    ("--device", str, "auto (default), cpu or gpu"),
    ("--precision", str, "auto (default), fp32 or amp_bf16"),
    ("--seed", int, "default: 17"),
]


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m flexbert.finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML file of FinetuneConfig keys; flags given on the command line override it")
    for flag, typ, help_ in _FLAGS:
        p.add_argument(flag, type=typ, default=None, help=help_)
    p.add_argument("--no-head-from-mlm", action="store_true",
                   help="initialise the classification head's dense + norm fresh instead of from the MLM head")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    given = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag, _, _ in _FLAGS}
    given = {k: v for k, v in given.items() if v is not None}
    if args.no_head_from_mlm:
        given["init_head_from_mlm"] = False
    return args, given


def load_config(args: argparse.Namespace, given: dict[str, Any]) -> FinetuneConfig:
    """FinetuneConfig from --config (if any) merged with the flags, decoded strictly."""
    data: dict[str, Any] = {}
    source = "the command line"
    if args.config:
        from omegaconf import OmegaConf

        loaded = to_plain(OmegaConf.load(args.config))
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config} must hold a mapping of fine-tuning keys")
        data, source = loaded, f"{args.config} + the command line"
    data.update(given)
    for key in ("checkpoint", "train", "validation"):
        if key not in data:
            raise ConfigError(f"--{key} is required (or '{key}:' in --config)")
    return decode(FinetuneConfig, data, source=source)


def _fmt(v: float | None) -> str:
    return "   n/a" if v is None else f"{v:.4f}"


def print_report(results: dict[str, Any]) -> None:
    """The per-epoch table, the best epoch, the test score and the baseline, for people."""
    names = list(results["validation"])
    print(f"{'epoch':>5}  {'train_loss':>10}  " + "  ".join(f"{'val ' + n:>12}" for n in names))
    for row in results["epochs"]:
        marker = " *" if row["epoch"] == results["best_epoch"] else ""
        print(f"{row['epoch']:>5}  {row['train_loss']:>10.4f}  "
              + "  ".join(f"{_fmt(row['validation'][n]):>12}" for n in names) + marker)
    print(f"best epoch {results['best_epoch']} by validation {results['selected_metric']} (marked *)")
    if results["test"] is not None:
        print("test: " + ", ".join(f"{n} {_fmt(v)}" for n, v in results["test"].items()))
    b = results["majority_baseline"]
    if b is not None:
        parts = [f"{s} accuracy {_fmt(b[s]['accuracy'])} / macro_f1 {_fmt(b[s]['macro_f1'])}"
                 for s in ("validation", "test") if s in b]
        print(f"majority baseline (always '{b['label']}'): " + "; ".join(parts))
    w = results["weights"]
    print(f"weights: {len(w['loaded'])} tensors from the checkpoint, newly initialised: "
          f"{', '.join(w['newly_initialised']) or 'none'}")
    if any(results["truncated"].values()):
        print("truncated to max_seq_len: " + ", ".join(f"{s} {n}" for s, n in results["truncated"].items()))


def main(argv: list[str] | None = None) -> int:
    args, given = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from flexbert.data.tokenizer import TokenizerError  # import cost: --help answers without torch
    from flexbert.finetune.data import DataError  # import cost: --help answers without torch
    from flexbert.finetune.model_loading import CheckpointError  # import cost: --help answers without torch

    try:
        cfg = load_config(args, given)
        if cfg.output:  # before any work: never an input's path, never a file, creatable
            check_output_dir(cfg.output, replaces=False, inputs=[
                ("--checkpoint", cfg.checkpoint), ("--train", cfg.train), ("--validation", cfg.validation),
                ("--test", cfg.test), ("--tokenizer", cfg.tokenizer), ("--config", args.config)])
        from flexbert.finetune.run import finetune  # import cost: --help answers without torch

        results = finetune(cfg)
    except (ConfigError, DataError, CheckpointError, TokenizerError, FileNotFoundError, ValueError) as e:
        # ValueError also covers checks such as a tokenizer larger than the checkpoint's vocabulary.
        if args.verbose:
            raise
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, whatever the message
        return 2
    print_report(results)
    if cfg.output:
        print(f"results: {cfg.output}/results.json")
    d = results["downstream"]
    print(json.dumps({"downstream": d, "score": d["value"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
