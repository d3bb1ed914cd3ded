"""Build the offline demo corpus (Python docs + stdlib code), its tokenizer and MDS shards.

    python data_prep/demo_corpus.py --output data/demo

Writes data/demo/corpus/demo.jsonl (fields text, source = prose|code, origin),
data/demo/tokenizer/ and data/demo/mds/{train,val}/. No network needed.
"""
from __future__ import annotations

import argparse
import sys

from flexbert.data.cli.common import add_common_flags, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="data/demo", metavar="DIR", help="default: data/demo")
    p.add_argument("--max-mb", type=float, default=4.0, help="corpus size cap in MB (default 4: ~1.3M tokens)")
    p.add_argument("--vocab-size", type=int, default=4096, help="tokenizer ids, rounded up to a multiple of 64")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes for the MDS conversion")
    add_common_flags(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> str:
        from flexbert.data.demo_corpus import build_demo  # import cost: --help answers before the data-prep stack loads

        s = build_demo(args.output, max_mb=args.max_mb, vocab_size=args.vocab_size, val_fraction=args.val_fraction,
                       seed=args.seed, workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress)
        lines = [f"demo data in {s['output']}:"]
        lines += [f"  corpus {source:5s}: {c['documents']:,} documents, {c['bytes'] / 1e6:.2f} MB"
                  for source, c in sorted(s["corpus"].items())]
        lines.append(f"  tokenizer: {s['tokenizer']['vocab_size']} ids (set model.vocab_size >= this)")
        lines += [f"  mds/{split}: {m['samples']:,} samples, {m['tokens']:,} tokens, p50 length {m['sample_length'].get('p50')}"
                  for split, m in s["mds"].items()]
        return "\n".join(lines)

    return run(args, work)


if __name__ == "__main__":  # python -m flexbert.data.cli.demo_corpus
    sys.exit(main())
