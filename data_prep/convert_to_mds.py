#!/usr/bin/env python
"""Convert text, code, JSONL(.gz/.zst) and Parquet files to pre-tokenized MDS shards.

Usage and options: flexbert/data/cli/convert_to_mds.py (also installed as `flexbert-convert-to-mds`).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402,F401 - puts the checkout on sys.path

from flexbert.data.cli.convert_to_mds import main, parse_args  # noqa: E402

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
