"""Writing results so that a crash or Ctrl-C never leaves half of one behind."""

from __future__ import annotations

import shutil
from pathlib import Path


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished folder `new` in place of `target`. The old folder is moved aside first and deleted last, so
    an interruption leaves the old or the new folder (plus a stray .old), never a mix of both."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.replace(old)
    new.replace(target)
    shutil.rmtree(old, ignore_errors=True)
