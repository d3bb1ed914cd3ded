#!/usr/bin/env python
"""Train a ModernBERT-style byte-level BPE tokenizer on local text / code / JSONL / Parquet.

Usage and options: flexbert/data/cli/build_tokenizer.py (also installed as `flexbert-build-tokenizer`).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402,F401 - puts the checkout on sys.path

from flexbert.data.cli.build_tokenizer import main, parse_args  # noqa: E402

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
