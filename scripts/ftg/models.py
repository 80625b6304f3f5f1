"""Finding and loading the base model that download_model put under models/, for inference or for LoRA training."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ftg.errors import UserError
from ftg.files import write_json
from ftg.paths import SELECTED_MODEL_FILE

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


def load_model_for_training(model_dir: Path, plan, train_cfg):
    """The base model with LoRA adapters on its language-model projections, ready for Trainer; and its tokenizer.

    plan: an ftg.device_plan.DevicePlan (method, precision, checkpointing and memory levers).
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig

    from ftg.chunked_loss import enable_chunked_loss
    from ftg.cpu_embeddings import keep_per_layer_embeddings_on_cpu
    from ftg.device_plan import KEEP_OUT_OF_4BIT, LORA_TARGET_REGEX

    model_config = AutoConfig.from_pretrained(model_dir)
    kwargs = {}
    if plan.quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=plan.dtype,
            llm_int8_skip_modules=KEEP_OUT_OF_4BIT,
        )
    if plan.device == "cuda":
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    model = load_causal_lm(model_dir, plan.dtype, model_class=text_model_class(model_config), **kwargs)
    # Training passes no cache: the KV-shared layers of Gemma-3n read K/V from their source layer directly, and
    # packed batches need cache=None so transformers builds a per-conversation attention mask from position_ids.
    model.config.use_cache = False
    if plan.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    lora_config = LoraConfig(
        r=train_cfg.lora_r,
        lora_alpha=train_cfg.lora_alpha,
        lora_dropout=train_cfg.lora_dropout,
        target_modules=LORA_TARGET_REGEX,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora_config)  # freezes every base weight (towers included)
    if plan.loss_chunk_tokens:
        enable_chunked_loss(model, plan.loss_chunk_tokens)
    if plan.per_layer_embeddings_on_cpu:
        keep_per_layer_embeddings_on_cpu(model)
    tokenizer = load_tokenizer(model_dir)
    return model, tokenizer
