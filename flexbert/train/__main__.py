"""`python -m flexbert.train RUN.yaml [overrides] [--dry-run]` (also `composer -m flexbert.train ...`)."""
import sys

from flexbert.train.cli import main

sys.exit(main(prog="python -m flexbert.train"))
