"""How a stage fails: a mistake the user can fix is one plain line and exit code 1; a bug keeps its traceback."""

from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """A problem the user can fix. The message says what is wrong, where, and what to do next."""


def run_main(main: Callable[[], int]) -> int:
    """Run a stage's main body: UserError -> one line on stderr and 1; Ctrl-C -> 130 (the stage saved its work)."""
    for stream in (sys.stdout, sys.stderr):
        # Cyrillic names and emoji must print on a Windows console too, whatever its code page.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors="replace")
    try:
        return main()
    except UserError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopped by Ctrl-C.", file=sys.stderr)
        return 130
