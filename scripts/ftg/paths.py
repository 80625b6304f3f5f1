"""Every file and folder name that one stage writes and a later stage reads, defined once.

The stages chain through these files, never through imports: a renamed file here is renamed for all of them.
The folders themselves (data/, output/, models/) are settings (config.yaml `paths:`); the functions below join a
folder setting with a name.

    models/selected_model.json          download_model -> every stage that needs the base model
    data/train_dataset.jsonl, eval_dataset.jsonl, prepare_report.json, token_lengths.png
                                        prepare_dataset -> finetune_gemma, convert (logit check), report
    output/runs/<run>/run.json, best/, checkpoint-<step>/, tensorboard/, loss.png; output/runs/latest_run.txt
                                        finetune_gemma -> merge_lora, report, check_tensorboard_runs
    output/merged/ (+ merge.json)       merge_lora -> convert, chat --compare (the base it names)
    output/finetuned_gemma*.gguf, gguf_report.json, Modelfile
                                        convert -> chat, report
    output/base_model.gguf (+ base_model.json)  made once by chat --compare or report, reused by both
    output/report.html, report.json     report
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The project folder (ftg.config has the same; this module needs no PyYAML, for setup_tools before it is there)."""

# --- models/ ------------------------------------------------------------------------------------------------------
SELECTED_MODEL_FILE = "selected_model.json"
"""{"path": ..., "repo": ...}: the base model download_model selected last."""
DEMO_MODEL_DIR = "gemma-3-270m"
"""models/<this>: the offline demo model that download_model --demo builds."""

# --- data/ --------------------------------------------------------------------------------------------------------
TRAIN_FILE = "train_dataset.jsonl"
EVAL_FILE = "eval_dataset.jsonl"
PREPARE_REPORT = "prepare_report.json"
"""Every file, format and message of the last prepare_dataset, accounted for."""
LENGTHS_PLOT = "token_lengths.png"

# --- output/runs/ -------------------------------------------------------------------------------------------------
RUNS_DIR = "runs"
RUN_FILE = "run.json"
BEST_DIR = "best"
LATEST_FILE = "latest_run.txt"
"""output/runs/latest_run.txt: the name of the newest run (no symlink: Windows); without it the newest run.json wins."""
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_MARKER = "complete.json"
"""Written last into a checkpoint folder; see ftg.runs.checkpoint_problem."""
TENSORBOARD_DIR = "tensorboard"
LOSS_PLOT = "loss.png"

# --- output/ ------------------------------------------------------------------------------------------------------
MERGED_DIR = "merged"
MERGE_RECORD = "merge.json"
"""Inside output/merged/: which run, adapter and base model were merged."""
GGUF_STEM = "finetuned_gemma"
MAIN_GGUF = GGUF_STEM + ".gguf"
"""The file users load: the main quant type (export.quant)."""
GGUF_REPORT = "gguf_report.json"
MODELFILE = "Modelfile"
BASE_GGUF = "base_model.gguf"
BASE_RECORD = "base_model.json"
REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
"""The report's figures (style fingerprint, pass-as-yours, perplexity) for scripts."""

# --- tools/ (made by prepare_venv) --------------------------------------------------------------------------------
CONVERTER_DIR = PROJECT_ROOT / "tools" / "llama.cpp"
CONVERTER_SCRIPT = CONVERTER_DIR / "convert_hf_to_gguf.py"


def runs_dir(output_dir: Path) -> Path:
    return Path(output_dir) / RUNS_DIR


def merged_dir(output_dir: Path) -> Path:
    return Path(output_dir) / MERGED_DIR


def gguf_file(output_dir: Path, gguf_type: str, main_type: str) -> Path:
    """output/finetuned_gemma.gguf for the main type, output/finetuned_gemma-<TYPE>.gguf for every other one."""
    return Path(output_dir) / (MAIN_GGUF if gguf_type == main_type else f"{GGUF_STEM}-{gguf_type}.gguf")
