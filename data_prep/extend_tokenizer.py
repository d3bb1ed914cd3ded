#!/usr/bin/env python
"""Append new tokens to an existing tokenizer folder (existing ids unchanged).

Usage and options: flexbert/data/cli/extend_tokenizer.py (also installed as `flexbert-extend-tokenizer`).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402,F401 - puts the checkout on sys.path

from flexbert.data.cli.extend_tokenizer import main, parse_args  # noqa: E402

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
