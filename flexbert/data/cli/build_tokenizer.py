"""Train a ModernBERT-style byte-level BPE tokenizer on local text / code / JSONL / Parquet.

    python data_prep/build_tokenizer.py --input corpus/ --vocab-size 32768 --output tok/

Special tokens [UNK] [CLS] [SEP] [PAD] [MASK] get ids 0..4; every document is wrapped
[CLS] ... [SEP]; the vocabulary is rounded up to a multiple of 64 with [unusedN] tokens.
The folder loads with transformers.AutoTokenizer and flexbert.data.tokenizer.load_tokenizer.
"""
from __future__ import annotations

import argparse
import sys

from flexbert.data.cli.common import add_common_flags, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="files or folders (walked recursively)")
    p.add_argument("--vocab-size", type=int, required=True, help="wanted ids; rounded up to a multiple of 64")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--min-frequency", type=int, default=2, help="minimum count of a pair to become a merge (default 2)")
    p.add_argument("--text-field", default="text", help="JSONL field / Parquet column holding the text")
    p.add_argument("--include", nargs="+", default=[], metavar="GLOB")
    p.add_argument("--exclude", nargs="+", default=[], metavar="GLOB")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail")
    p.add_argument("--model-max-length", type=int, default=8192, help="written to tokenizer_config.json")
    add_common_flags(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> str:
        from flexbert.data.tokenizer import build_tokenizer_from_files  # import cost: --help answers before the data-prep stack loads

        info = build_tokenizer_from_files(
            args.input, args.vocab_size, args.output, min_frequency=args.min_frequency, text_field=args.text_field,
            include=args.include, exclude=args.exclude, on_error=args.on_error,
            model_max_length=args.model_max_length, overwrite=args.overwrite, show_progress=not args.no_progress,
        )
        return (f"tokenizer saved to {args.output}: {info.vocab_size} ids; [CLS] {info.cls_id}, [SEP] {info.sep_id}, "
                f"[PAD] {info.pad_id}, [MASK] {info.mask_id}, [UNK] {info.unk_id}")

    return run(args, work)


if __name__ == "__main__":  # python -m flexbert.data.cli.build_tokenizer
    sys.exit(main())
