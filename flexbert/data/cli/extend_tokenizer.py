"""Append new tokens to an existing tokenizer folder (existing ids unchanged).

    python data_prep/extend_tokenizer.py --base ModernBERT-base/ --add-tokens new_tokens.txt --output tok-ext/
    python data_prep/extend_tokenizer.py --base ModernBERT-base/ --train-on corpus/ --num-new 512 --output tok-ext/

New tokens get ids after the last existing one. Train with `tokenizer: tok-ext/` and
`init_from: {hf: ModernBERT-base/}`: the model's vocabulary grows to the new size rounded up to
a multiple of 64, new embedding rows start as the mean of the existing ones
(docs/continued_pretraining.md).
"""
from __future__ import annotations

import argparse
import sys

from flexbert.data.cli.common import add_common_flags, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, metavar="DIR", help="tokenizer folder to extend (with tokenizer.json)")
    p.add_argument("--add-tokens", metavar="FILE", help="tokens to add, one per line")
    p.add_argument("--train-on", nargs="+", metavar="PATH", help="files/folders to mine frequent multi-piece words from")
    p.add_argument("--num-new", type=int, default=0, help="with --train-on: how many tokens to add")
    p.add_argument("--min-count", type=int, default=2, help="with --train-on: minimum word count (default 2)")
    p.add_argument("--text-field", default="text", help="JSONL field / Parquet column holding the text")
    p.add_argument("--output", required=True, metavar="DIR")
    add_common_flags(p, progress=False)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> str:
        from flexbert.data.tokenizer import round_up  # import cost: --help answers before the data-prep stack loads
        from flexbert.data.tokenizer_extend import extend_tokenizer, read_token_list  # import cost: --help answers before the data-prep stack loads
        from flexbert.outputs import check_output_dir  # import cost: --help answers before the data-prep stack loads

        check_output_dir(args.output, overwrite=args.overwrite, inputs=[
            ("--base", args.base), ("--add-tokens", args.add_tokens), ("--train-on", args.train_on)])
        tokens = read_token_list(args.add_tokens) if args.add_tokens else None
        info, added = extend_tokenizer(args.base, args.output, tokens=tokens, train_on=args.train_on,
                                       num_new=args.num_new, text_field=args.text_field,
                                       min_count=args.min_count, overwrite=args.overwrite)
        return (f"tokenizer saved to {args.output}: {info.vocab_size} ids ({len(added)} added); "
                f"the model's vocab_size becomes {round_up(info.vocab_size)}")

    return run(args, work)


if __name__ == "__main__":  # python -m flexbert.data.cli.extend_tokenizer
    sys.exit(main())
