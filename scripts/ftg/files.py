"""Writing results so that a crash or Ctrl-C never leaves half of one behind."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ftg.errors import UserError


def replace_when_written(path: Path, write) -> None:
    """Call write(tmp) on a .tmp file beside `path`, then rename it over `path`: readers see the old or the new
    file, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    replace_when_written(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_png(figure, path: Path, dpi: int = 100) -> None:
    """Write a matplotlib figure to `path` as PNG atomically, then close it."""
    import matplotlib.pyplot as plt

    try:
        replace_when_written(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(figure)


def write_json(path: Path, data) -> None:
    """Write `data` as indented UTF-8 JSON (non-ASCII kept readable; dates and paths as strings), atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


OUTPUT_SPACE_ADVICE = ("Free some space (old runs in output/runs, old GGUF files) or set paths.output_dir to another "
                       "disk.")


def check_free_space(folder: Path, need_bytes: int, what: str, advice: str = OUTPUT_SPACE_ADVICE) -> int:
    """Refuse to start when the disk holding `folder` has less than `need_bytes` free; returns the free bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise UserError(f"not enough disk space for {what} in {folder}: {need_bytes / 1e9:.1f} GB needed, "
                        f"{free / 1e9:.1f} GB free. {advice}")
    return free


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished folder `new` in place of `target`. The old folder is moved aside first and deleted last, so
    an interruption leaves the old or the new folder (plus a stray .old), never a mix of both."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.replace(old)
    new.replace(target)
    shutil.rmtree(old, ignore_errors=True)
