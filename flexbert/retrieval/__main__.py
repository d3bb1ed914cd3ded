"""CLI: fine-tune a FlexBERT checkpoint as a code-search retriever and report nDCG@10 / MRR@10.

    python -m flexbert.retrieval --checkpoint runs/demo/hf --data data/retrieval/stdlib \
        --epochs 1 --max-seq-len 128 --output runs/retrieval/demo
    python -m flexbert.retrieval --checkpoint runs/demo/hf --data data/retrieval/stdlib --random-init ...

Without --data the pairs are built on the fly from --source folders (default: the standard
library). The last stdout line is one JSON object for sweep runners:
``{"downstream": {"metric": "ndcg@10", "value": v, "mrr@10": m}, "score": v}``.
Bad input (checkpoint, tokenizer, data) exits with status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from typing import Any
from flexbert.outputs import atomic_write_json, atomic_write_text, check_output_dir
from flexbert.retrieval.dataset import build_dataset, default_source, read_split

__all__ = ["main", "run"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m flexbert.retrieval", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True,
                   help="Composer .pt (config.yaml beside it), FlexBERT folder or HF ModernBERT folder")
    p.add_argument("--tokenizer", help="tokenizer folder (default: beside the checkpoint / from its config.yaml)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="folder with train.jsonl and test.jsonl (python -m flexbert.retrieval.dataset)")
    src.add_argument("--source", nargs="+", help="build pairs from these folders / .py files (default: stdlib)")
    p.add_argument("--epochs", type=int, default=1, help="default: 1")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per step = in-batch negatives + 1 (default 32)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-seq-len", type=int, default=256,
                   help="tokens per query / document, capped at the model's max_position_embeddings (default 256)")
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate, AdamW, linear warmup + decay")
    p.add_argument("--max-train", type=int, default=None, help="use at most this many training pairs (seeded sample)")
    p.add_argument("--random-init", action="store_true",
                   help="same architecture and tokenizer as --checkpoint, fresh weights (the baseline)")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--eval-split", choices=("test", "validation"), default="test",
                   help="split to score (with --data): 'validation' for tuning --lr etc., 'test' for the report")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--output", help="folder for results.json")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def _load_pairs(args: argparse.Namespace) -> tuple[list[dict], list[dict], str]:
    if args.data:
        return read_split(args.data, "train"), read_split(args.data, args.eval_split), args.data
    sources = args.source or [default_source()]
    splits, _ = build_dataset(sources)
    return ([p.to_json() for p in splits["train"]], [p.to_json() for p in splits[args.eval_split]],
            "built from " + ", ".join(map(str, sources)))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Export, fine-tune and evaluate; returns the results dict (also written to --output)."""
    import torch

    from flexbert.retrieval.model import retriever_from_checkpoint  # import cost: --help answers without torch
    from flexbert.retrieval.train_eval import evaluate_retrieval, train_retriever  # import cost: --help answers without torch

    train, test, data_desc = _load_pairs(args)
    if args.max_train is not None and len(train) > args.max_train:
        train = random.Random(args.seed).sample(train, args.max_train)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = time.time()
    with retriever_from_checkpoint(args.checkpoint, tokenizer=args.tokenizer, random_init=args.random_init,
                                   seed=args.seed, max_seq_len=args.max_seq_len, device=args.device) as (model, info):
        history = train_retriever(model, train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                  seed=args.seed) if args.epochs > 0 else []
        metrics = evaluate_retrieval(model, test, batch_size=args.eval_batch_size)
    downstream = {"metric": "ndcg@10", "value": metrics["ndcg@10"], "mrr@10": metrics["mrr@10"],
                  "split": args.eval_split}
    results = {"checkpoint": str(args.checkpoint), "random_init": args.random_init, "model": info,
               "data": {"source": data_desc, "train_pairs": len(train), "test_queries": metrics["queries"],
                        "test_corpus": metrics["corpus"]},
               "settings": {"eval_split": args.eval_split, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                            "max_seq_len": info.get("max_seq_len", args.max_seq_len)},
               "train": history, "test": metrics, "seconds": round(time.time() - t0, 1),
               "downstream": downstream, "score": downstream["value"]}
    if args.output:
        atomic_write_json(os.path.join(args.output, "results.json"), results)
    return results


def print_report(results: dict[str, Any]) -> None:
    for row in results["train"]:
        print(f"epoch {row['epoch']}: train loss {row['loss']:.4f} ({row['steps']} steps)")
    m, d = results["test"], results["data"]
    init = "random init" if results["random_init"] else "pretrained"
    print(f"{results['downstream']['split']} ({init}; {d['test_queries']} queries, corpus {d['test_corpus']} documents, "
          f"{d['train_pairs']} training pairs):")
    print(f"{'metric':>10}  {'value':>8}")
    for k in ("ndcg@10", "mrr@10", "recall@1", "recall@10", "map@10"):
        print(f"{k:>10}  {m[k]:>8.4f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from flexbert.data.tokenizer import TokenizerError  # import cost: --help answers without torch
    from flexbert.export.pretrained import CheckpointError  # import cost: --help answers without torch

    try:
        if args.output:  # before any work: never an input's path, never a file, creatable
            check_output_dir(args.output, replaces=False, inputs=[
                ("--checkpoint", args.checkpoint), ("--tokenizer", args.tokenizer), ("--data", args.data),
                ("--source", args.source)])
        results = run(args)
    except (CheckpointError, TokenizerError, FileNotFoundError, ValueError) as e:
        if args.verbose:
            raise
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    print_report(results)
    if args.output:
        print(f"results: {args.output}/results.json")
    print(json.dumps({"downstream": results["downstream"], "score": results["score"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
