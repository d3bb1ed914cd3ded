#!/usr/bin/env python
"""Convert local text, code, JSONL(.gz/.zst) and Parquet files to pre-tokenized MDS shards.

    python data_prep/convert_to_mds.py --input corpus/ --tokenizer tok/ --output mds/ --val-fraction 0.01

Writes OUTPUT/train and OUTPUT/val (StreamingDataset folders) and OUTPUT/summary.json.
Bad input stops the run with `FILE:LINE: what is wrong` and exit code 2 (--on-error skip
skips and counts it instead). See data_prep/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import add_common_flags, run  # noqa: E402


def _default_workers() -> int:
    cores = os.cpu_count() or 1
    return 1 if cores <= 2 else min(8, cores - 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="files or folders (walked recursively)")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer folder (tokenizer.json)")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--text-field", default="text", help="JSONL field / Parquet column holding the text (default: text)")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail", help="stop at bad input (default) or skip and count it")
    p.add_argument("--include", nargs="+", default=[], metavar="GLOB", help="in folders, take only files matching these globs")
    p.add_argument("--exclude", nargs="+", default=[], metavar="GLOB", help="in folders, drop files/folders matching these globs")
    p.add_argument("--val-fraction", type=float, default=0.0, help="fraction of documents for OUTPUT/val (by text hash)")
    p.add_argument("--compression", choices=("zstd", "none"), default="zstd")
    p.add_argument("--workers", type=int, default=_default_workers(),
                   help="tokenizer processes; 1 = in this process, using tokenizers' own threads "
                        "(default: 1 on <= 2 cores, else min(8, cores - 1): the main process reads and writes)")
    p.add_argument("--chunk-len", type=int, default=None, help="split documents longer than this into wrapped chunks")
    p.add_argument("--min-tokens", type=int, default=0, help="drop documents shorter than this (ids incl. [CLS]/[SEP])")
    add_common_flags(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> str:
        from flexbert.data.convert import ConvertConfig, convert, format_summary

        cfg = ConvertConfig(
            inputs=args.input, tokenizer=args.tokenizer, output=args.output, text_field=args.text_field,
            on_error=args.on_error, overwrite=args.overwrite, include=args.include, exclude=args.exclude,
            val_fraction=args.val_fraction, compression=args.compression, workers=args.workers,
            chunk_len=args.chunk_len, min_tokens=args.min_tokens, progress=not args.no_progress,
        )
        return format_summary(convert(cfg))

    return run(args, work)


if __name__ == "__main__":
    sys.exit(main())
