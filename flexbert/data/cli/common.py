"""Shared bits of the data preparation command lines: logging, flags, user error -> exit code 2."""
from __future__ import annotations

import logging
import sys

EXIT_BAD_INPUT = 2


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input or flags: reported as one line, exit code 2."""
    from flexbert.data.readers import InputError  # import cost: --help answers before the data-prep stack loads
    from flexbert.data.tokenizer import TokenizerError  # import cost: --help answers before the data-prep stack loads

    return (InputError, TokenizerError, FileExistsError, ValueError)


def fail(message: object) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def add_common_flags(parser, *, progress: bool = True) -> None:
    """--overwrite, --no-progress (when the command has a progress bar) and -v, the same in every command."""
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output (only once the new one is complete)")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args, work) -> int:
    """Set up logging, call `work()` and print the line it returns; a user error is one line and exit code 2."""
    setup_logging(args.verbose)
    try:
        message = work()
    except user_errors() as e:
        return fail(e)
    except KeyboardInterrupt:
        return fail("interrupted; nothing was written")
    print(message)
    return 0
