#!/usr/bin/env python
"""Build the offline demo corpus (Python docs + stdlib code), its tokenizer and MDS shards.

    python data_prep/demo_corpus.py --output data/demo

Writes data/demo/corpus/demo.jsonl (fields text, source = prose|code, origin),
data/demo/tokenizer/ and data/demo/mds/{train,val}/. No network needed.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import fail, setup_logging, user_errors  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="data/demo", metavar="DIR", help="default: data/demo")
    p.add_argument("--max-mb", type=float, default=4.0, help="corpus size cap in MB (default 4: ~1.3M tokens)")
    p.add_argument("--vocab-size", type=int, default=4096, help="tokenizer ids, rounded up to a multiple of 64")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes for the MDS conversion")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from flexbert.data.demo_corpus import build_demo

    try:
        s = build_demo(args.output, max_mb=args.max_mb, vocab_size=args.vocab_size, val_fraction=args.val_fraction,
                       seed=args.seed, workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress)
    except user_errors() as e:
        return fail(e)
    except KeyboardInterrupt:
        return fail("interrupted; nothing was written")
    print(f"demo data in {s['output']}:")
    for source, c in sorted(s["corpus"].items()):
        print(f"  corpus {source:5s}: {c['documents']:,} documents, {c['bytes'] / 1e6:.2f} MB")
    print(f"  tokenizer: {s['tokenizer']['vocab_size']} ids (set model.vocab_size >= this)")
    for split, m in s["mds"].items():
        print(f"  mds/{split}: {m['samples']:,} samples, {m['tokens']:,} tokens, p50 length {m['sample_length'].get('p50')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
