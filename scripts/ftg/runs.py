"""The output/runs/ contract: choosing a new or resumed run, checkpoint integrity, and the run record.

finetune_gemma writes each run to output/runs/<run-name>/:
    run.json            the RunRecord below (merge_lora, report and a resumed finetune_gemma read it)
    best/               the LoRA adapter with the lowest eval loss, plus the tokenizer
    checkpoint-<step>/  Trainer's own checkpoint; complete.json, written last, lists the size of every file
output/runs/latest_run.txt names the newest run. The later stages find "the latest run" here (find_run).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ftg.errors import UserError
from ftg.files import replace_dir, write_json
from ftg.paths import BEST_DIR, CHECKPOINT_MARKER, CHECKPOINT_PREFIX, LATEST_FILE, RUN_FILE, runs_dir

NOT_TRAINING_SETTINGS = ("resume", "run_name", "auto_export", "sample_prompts", "max_bad_steps", "loss_chunk_tokens",
                         "per_layer_embeddings_on_cpu")
"""Settings that may change between a run and its resumption without making it a different run (the last two move
memory around; the numbers computed stay the same)."""


@dataclass
class RunRecord:
    """run.json: what was trained, on what, with which settings, and how far it got."""

    run_name: str
    base_model: str
    """The base model folder, absolute."""
    data_hash: str
    """sha256 of data/train + eval .jsonl: other data makes another run."""
    settings: dict
    """The train settings and the device plan; a change (other than NOT_TRAINING_SETTINGS) makes another run."""
    model_class: str = ""
    """The transformers class that was trained (e.g. Gemma3nForCausalLM); merge_lora loads the base with it."""
    best_step: int | None = None
    best_eval_loss: float | None = None
    last_step: int | None = None
    status: str = "running"
    """running (also after a crash or Ctrl-C) or finished."""
    started: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))
    finished: str = ""

    def identity(self) -> dict:
        """What must be equal for a run to be resumed: settings, data and base model."""
        return {**self.settings, "data_hash": self.data_hash, "base_model": self.base_model}

    def save(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / RUN_FILE, dataclasses.asdict(self))


def read_run(run_dir: Path) -> RunRecord:
    """run.json of a run folder, checked for what the later stages need."""
    path = Path(run_dir) / RUN_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}. The run may be damaged; run finetune_gemma again.") from None
    if not isinstance(info, dict):
        raise UserError(f"{path} is not a run record. It was not written by finetune_gemma; pass another --run.")
    missing = [key for key in ("run_name", "base_model") if not info.get(key)]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}. It was not written by finetune_gemma; pass another --run.")
    known = {f.name for f in dataclasses.fields(RunRecord)}
    info.setdefault("data_hash", "")
    info.setdefault("settings", {})
    return RunRecord(**{key: value for key, value in info.items() if key in known})


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


def best_adapter_dir(run_dir: Path) -> Path:
    """The run's best/ adapter folder, checked to hold a PEFT adapter."""
    best = Path(run_dir) / BEST_DIR
    if not (best / "adapter_config.json").exists() or not (best / "adapter_model.safetensors").exists():
        raise UserError(
            f"{best} holds no adapter (adapter_config.json + adapter_model.safetensors). The run saved no best "
            "checkpoint yet: let finetune_gemma reach its first evaluation, or pass another --run."
        )
    return best


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name[len(CHECKPOINT_PREFIX):])


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """checkpoint-<step> folders, oldest step first."""
    found = [p for p in Path(run_dir).glob(f"{CHECKPOINT_PREFIX}*")
             if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=checkpoint_step)


def write_marker(checkpoint: Path) -> None:
    """Mark a checkpoint complete: the size of every file, written last."""
    sizes = {p.name: p.stat().st_size for p in sorted(checkpoint.iterdir()) if p.is_file() and p.name != CHECKPOINT_MARKER}
    write_json(checkpoint / CHECKPOINT_MARKER, {"files": sizes})


def checkpoint_problem(checkpoint: Path) -> str:
    """Why this checkpoint cannot be resumed from ('' when it is complete)."""
    marker = checkpoint / CHECKPOINT_MARKER
    if not marker.exists():
        return "it was not finished (killed while saving?)"
    try:
        sizes = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError):
        return f"its {CHECKPOINT_MARKER} is damaged"
    for name, size in sizes.items():
        path = checkpoint / name
        if not path.exists():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size:,} bytes instead of {size:,} (cut short)"
    return ""


def newest_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that is complete; damaged or half-written ones are reported and removed."""
    for checkpoint in reversed(checkpoint_dirs(run_dir)):
        problem = checkpoint_problem(checkpoint)
        if not problem:
            return checkpoint
        print(f"WARNING: skipping {checkpoint.name}: {problem}. Deleting it; training continues from an earlier one.")
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def copy_adapter(checkpoint: Path, target: Path, tokenizer) -> None:
    """Put a checkpoint's adapter and the tokenizer into target/, replacing it in one step."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy2(checkpoint / name, tmp / name)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, target)


# ----------------------------------------------------------------------------------------------------------------
# New or resumed
# ----------------------------------------------------------------------------------------------------------------


def settings_changes(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every setting that differs, except NOT_TRAINING_SETTINGS."""
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
            if key not in NOT_TRAINING_SETTINGS and old.get(key) != new.get(key)]


def choose_run(output_dir: Path, record: RunRecord, policy: str, run_name: str) -> tuple[Path, Path | None, str]:
    """(run folder, checkpoint to resume from or None, what we decided and why).

    policy: auto (resume the latest run when its data and settings match), new, or force (resume whatever changed).
    """
    if policy not in ("auto", "new", "force"):
        raise UserError(f"train.resume must be auto, new or force, not {policy!r}.")
    root = runs_dir(output_dir)
    previous = None
    if run_name:
        previous = root / run_name if (root / run_name / RUN_FILE).exists() else None
    elif policy != "new" and any(root.glob(f"*/{RUN_FILE}")):
        previous = find_run(output_dir)
    if previous is None:
        return new_run_dir(root, run_name), None, "Starting a new run."
    old = read_run(previous)
    changes = [] if policy == "force" else settings_changes(old.identity(), record.identity())
    if changes:
        why = "; ".join(changes[:6]) + (f" (+{len(changes) - 6} more)" if len(changes) > 6 else "")
        if run_name:
            raise UserError(f"run '{run_name}' was trained with other data or settings ({why}). "
                            "Pick another --run-name, or use --resume force to continue it anyway.")
        return new_run_dir(root, run_name), None, f"Starting a new run: the last run {previous.name} differs ({why})."
    if old.status == "finished":
        return previous, None, f"Run {previous.name} already finished with the same data and settings."
    checkpoint = newest_complete_checkpoint(previous)
    if checkpoint is None:
        return previous, None, f"Run {previous.name} has no complete checkpoint yet: starting it again from step 0."
    forced = " (--resume force)" if policy == "force" else ""
    return previous, checkpoint, (f"Resuming run {previous.name} from {checkpoint.name}: same data and settings{forced}. "
                                  "Use --resume new to start over.")


def new_run_dir(root: Path, run_name: str) -> Path:
    """output/runs/<run_name or the date and time>, with -2, -3, ... where that folder exists already."""
    name = run_name or datetime.now().strftime("%Y-%m-%d_%H%M")
    run_dir, suffix = root / name, 2
    while run_dir.exists():
        run_dir, suffix = root / f"{name}-{suffix}", suffix + 1
    return run_dir


def mark_latest(run_dir: Path) -> None:
    """output/runs/latest_run.txt := this run."""
    (Path(run_dir).parent / LATEST_FILE).write_text(Path(run_dir).name, encoding="utf-8")
