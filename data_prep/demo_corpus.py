#!/usr/bin/env python
"""Build the offline demo corpus (Python docs + stdlib code), its tokenizer and MDS shards.

Usage and options: flexbert/data/cli/demo_corpus.py (also installed as `flexbert-demo-corpus`).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402,F401 - puts the checkout on sys.path

from flexbert.data.cli.demo_corpus import main, parse_args  # noqa: E402

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
