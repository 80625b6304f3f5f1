"""Finding a training run under output/runs/ and reading its run.json.

finetune_gemma writes each run to output/runs/<run-name>/ with run.json (base model, model class, data hash,
settings, best step) and best/ (the LoRA adapter with the lowest eval loss, plus the tokenizer). The later stages
(merge_lora, convert, chat, report) find "the latest run" here.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftg.errors import UserError

RUN_FILE = "run.json"
BEST_DIR = "best"
LATEST_FILE = "latest_run.txt"
"""Optional: output/runs/latest_run.txt holds the name of the newest run; without it the newest run.json wins."""


def runs_dir(output_dir: Path) -> Path:
    return Path(output_dir) / "runs"


def find_run(output_dir: Path, run: str = "") -> Path:
    """The run folder: `run` (a name under output/runs, or a folder path) when given, else the latest run."""
    root = runs_dir(output_dir)
    if run:
        candidate = Path(run)
        folder = candidate if candidate.is_absolute() or (candidate / RUN_FILE).exists() else root / run
        if not (folder / RUN_FILE).exists():
            known = sorted(p.parent.name for p in root.glob(f"*/{RUN_FILE}"))
            hint = f" Runs found: {', '.join(known)}." if known else " There are no runs yet: run finetune_gemma first."
            raise UserError(f"no training run '{run}' ({folder / RUN_FILE} does not exist).{hint}")
        return folder
    latest = root / LATEST_FILE
    if latest.exists():
        name = latest.read_text(encoding="utf-8").strip()
        if name and (root / name / RUN_FILE).exists():
            return root / name
    found = sorted(root.glob(f"*/{RUN_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no training run found in {root}. Run finetune_gemma first, or pass --run NAME.")
    return found[-1].parent


def read_run(run_dir: Path) -> dict:
    """run.json of a run folder, checked for the keys the later stages need."""
    path = Path(run_dir) / RUN_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}. The run may be damaged; run finetune_gemma again.") from None
    missing = [key for key in ("run_name", "base_model") if not info.get(key)]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}. It was not written by finetune_gemma; pass another --run.")
    return info


def best_adapter_dir(run_dir: Path) -> Path:
    """The run's best/ adapter folder, checked to hold a PEFT adapter."""
    best = Path(run_dir) / BEST_DIR
    if not (best / "adapter_config.json").exists() or not (best / "adapter_model.safetensors").exists():
        raise UserError(
            f"{best} holds no adapter (adapter_config.json + adapter_model.safetensors). The run saved no best "
            "checkpoint yet: let finetune_gemma reach its first evaluation, or pass another --run."
        )
    return best
