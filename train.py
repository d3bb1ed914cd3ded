"""Train a FlexBERT encoder: `composer train.py yamls/RUN.yaml [dotted.key=value ...] [--dry-run]`.

Also runs as `python train.py ...` (one process). The command itself is
`flexbert.train.cli.main`, installed as `flexbert-train` and `python -m flexbert.train`, so
it works without a checkout too; this file stays because checkouts and docs launch it by path.
"""
from __future__ import annotations

import sys

from flexbert.train.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
