"""`python -m flexbert.long_context MODEL --output DIR`: see flexbert/long_context/cli.py."""
import sys

from flexbert.long_context.cli import main

if __name__ == "__main__":
    sys.exit(main())
