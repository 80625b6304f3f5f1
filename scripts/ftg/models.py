"""Finding and loading the base model that download_model put under models/."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ftg.errors import UserError
from ftg.files import write_json

SELECTED_MODEL_FILE = "selected_model.json"
"""Written by download_model into models/: {"path": ..., "repo": ...}; read by the later stages."""

CACHE_DIR = Path(os.environ.get("FTG_CACHE_DIR", Path.home() / ".cache" / "finetune-gemma"))
"""Where slow-to-build things are kept between runs and between clones (the demo model, test fixtures)."""


def resolve_model_dir(cfg) -> Path:
    """The base model folder: `model.model` when set, else the one download_model selected last."""
    if cfg.model.model:
        path = Path(cfg.model.model)
        if not path.is_absolute():
            path = (Path.cwd() / path).resolve()
    else:
        selected = cfg.paths.models_dir / SELECTED_MODEL_FILE
        if not selected.exists():
            raise UserError(
                "no base model selected yet. Run download_model first (or download_model --demo for the small "
                "offline demo model), or pass --model FOLDER."
            )
        path = Path(json.loads(selected.read_text(encoding="utf-8"))["path"])
        if not path.is_absolute():
            path = (cfg.paths.models_dir.parent / path).resolve()
    if not (path / "config.json").exists():
        raise UserError(f"{path} is not a model folder (no config.json). Run download_model again, or fix --model.")
    return path


def select_model(models_dir: Path, model_dir: Path, repo: str = "") -> None:
    """Remember model_dir as the base model for the next stages."""
    models_dir.mkdir(parents=True, exist_ok=True)
    record = {"path": str(model_dir.resolve()), "repo": repo}
    write_json(models_dir / SELECTED_MODEL_FILE, record)


def load_tokenizer(model_dir: Path):
    """The model's own tokenizer, with Gemma's chat template set where the checkpoint has none."""
    from transformers import AutoTokenizer

    from ftg.chat_template import ensure_chat_template

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_chat_template(tokenizer)
    return tokenizer


def text_model_class(model_config):
    """The class that loads just the text model of a checkpoint.

    Gemma-3n checkpoints are multimodal (Gemma3nForConditionalGeneration, with audio and vision towers that need
    timm); Gemma3nForCausalLM reads only their language-model weights, so the towers are never loaded. Other models
    go through AutoModelForCausalLM (Gemma 3 4B keeps its vision tower, which LoRA leaves frozen).
    """
    import transformers

    if model_config.model_type in ("gemma3n", "gemma3n_text"):
        return transformers.Gemma3nForCausalLM
    return transformers.AutoModelForCausalLM


def load_causal_lm(model_dir: Path, dtype, model_class=None, **kwargs):
    """Load a causal LM and refuse one with weights that were missing from the checkpoint (randomly initialised).

    model_class: e.g. text_model_class(config); default AutoModelForCausalLM.
    """
    from transformers import AutoModelForCausalLM

    model_class = model_class or AutoModelForCausalLM
    model, info = model_class.from_pretrained(model_dir, dtype=dtype, output_loading_info=True, **kwargs)
    missing = [k for k in info.get("missing_keys", []) if k]
    if missing:
        raise UserError(
            f"{model_dir} is incomplete: {len(missing)} weights are missing (first: {missing[0]}). "
            "Download the model again with download_model."
        )
    return model
