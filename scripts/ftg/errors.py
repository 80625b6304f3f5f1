"""How a stage fails: a mistake the user can fix is one plain line and exit code 1; a bug keeps its traceback."""

from __future__ import annotations

import sys
import warnings
from typing import Callable

KNOWN_WARNINGS = [
    # peft (get_peft_model) and trl read transformers' deprecated alias; the fix is theirs, not the user's.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
]
"""(category, message regex) of library warnings a user can do nothing about. Beginners read every console line,
so these are hidden by name; any other warning still shows."""


def hide_known_warnings() -> None:
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


class UserError(Exception):
    """A problem the user can fix. The message says what is wrong, where, and what to do next."""


def run_main(main: Callable[[], int]) -> int:
    """Run a stage's main body: UserError -> one line on stderr and 1; Ctrl-C -> 130 (the stage saved its work)."""
    for stream in (sys.stdout, sys.stderr):
        # Cyrillic names and emoji must print on a Windows console too, whatever its code page.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors="replace")
    hide_known_warnings()
    try:
        return main()
    except UserError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopped by Ctrl-C.", file=sys.stderr)
        return 130
