"""How entry scripts fail: a user's mistake is one readable line and exit code 2; a traceback only with --debug.

Every script in pipelines/ and jobs/ runs its `main` through `run_main`:

    def main(argv=None) -> int:
        return run_main(_main, argv)

A user error is a `ValueError` (bad option or config value, unreadable corpus, a manifest that
does not parse, an empty dataset: the message names the file, task or field) or an `OSError`
(missing, unwritable or read-only paths, a full disk, an unreachable store), also when it comes
back wrapped from a Ray task. Anything else is a bug and keeps its traceback. Argparse's own
usage errors already exit with 2.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2
HINTS = {  # errno -> what to do
    errno.EROFS: "the location is on a read-only filesystem: choose a writable --output",
    errno.EACCES: "no permission: choose a location you can write to, or fix its permissions",
    errno.EPERM: "no permission: choose a location you can write to, or fix its permissions",
    errno.ENOSPC: "the disk is full: free space or choose another --output",
    errno.EDQUOT: "the disk quota is exhausted: free space or choose another --output",
    errno.ENOTDIR: "a parent of this path is a file, not a folder: choose another path",
}


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """`--debug`: show the full traceback of an error instead of one line."""
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def user_error(error: BaseException) -> BaseException | None:
    """The user error inside `error` (through Ray's wrappers and `raise ... from`), or None for a bug."""
    seen = 0
    while error is not None and seen < 10:
        wrapper = type(error).__module__.startswith("ray.")
        if not wrapper and isinstance(error, ValueError | OSError):
            return error
        error = getattr(error, "cause", None) or error.__cause__
        seen += 1
    return None


def describe(error: BaseException) -> str:
    """One line: the error's message, plus what to do for the common storage errors."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, OSError) and not isinstance(error, ValueError):
        if error.filename and str(error.filename) not in message:
            message = f"{message}: {error.filename}"
        hint = HINTS.get(error.errno)
        if hint:
            message = f"{message} ({hint})"
    return message


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """`main(argv)`, with a user error printed as `error: ...` on stderr and returned as exit code 2."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        return main(argv)
    except Exception as error:  # noqa: BLE001 - sorted below: user errors become one line, bugs re-raise
        cause = user_error(error)
        if cause is None or debug:
            raise
        print(f"error: {describe(cause)}", file=sys.stderr)
        print("(run again with --debug for the full traceback)", file=sys.stderr)
        return EXIT_USER_ERROR
