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


def select_model(models_dir: Path, model_dir: Path, repo: str = "", device_plan: dict | None = None) -> None:
    """Remember model_dir as the base model for the next stages (with download_model's training prediction)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    record = {"path": str(model_dir.resolve()), "repo": repo, "device_plan": device_plan or {}}
    write_json(models_dir / SELECTED_MODEL_FILE, record)


def load_tokenizer(model_dir: Path):
    """The model's own tokenizer, with Gemma's chat template set where the checkpoint has none."""
    from transformers import AutoTokenizer

    from ftg.chat_template import ensure_chat_template

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_chat_template(tokenizer)
    return tokenizer


TEXT_CLASSES = {
    "gemma3": "Gemma3ForCausalLM", "gemma3_text": "Gemma3ForCausalLM",
    "gemma3n": "Gemma3nForCausalLM", "gemma3n_text": "Gemma3nForCausalLM",
    "gemma4": "Gemma4ForCausalLM", "gemma4_text": "Gemma4ForCausalLM",
}
"""config model_type -> the text-only class that training, merging and the GGUF check load.

The multimodal checkpoints (Gemma3/3n/4ForConditionalGeneration) hold the language model under
model.language_model.*; loading it into the text class leaves the vision and audio towers on disk: the fine-tune
never changes them, training needs no memory for them, and Gemma-3n's vision tower would need timm."""

LANGUAGE_MODEL_KEYS = {r"^model\.language_model\.": "model.", r"^language_model\.model\.": "model."}
"""Checkpoint key -> text-class key: 3n and 4 keep model.language_model.*, Gemma 3 4B+ keeps the older
language_model.model.* (transformers 5.24 saves it back in that form too); a text-only checkpoint has neither."""


def text_model_class(model_config):
    """The class that loads just the text model of a checkpoint (AutoModelForCausalLM for other models)."""
    import transformers

    name = TEXT_CLASSES.get(model_config.model_type)
    return getattr(transformers, name) if name else transformers.AutoModelForCausalLM


def is_multimodal(model_config) -> bool:
    return model_config.model_type in ("gemma3", "gemma3n", "gemma4")


def load_causal_lm(model_dir: Path, dtype, model_class=None, **kwargs):
    """The text model of a checkpoint, refusing one with weights missing from it (randomly initialised).

    model_class: default text_model_class(config). For a multimodal checkpoint only the language model is read; the
    tower tensors it leaves on disk are counted in one line instead of transformers' table of unexpected keys.
    """
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    model_class = model_class or text_model_class(config)
    if is_multimodal(config) and model_class.__name__.endswith("ForCausalLM"):
        kwargs.setdefault("config", config.get_text_config())
        kwargs.setdefault("key_mapping", LANGUAGE_MODEL_KEYS)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the unexpected-keys table: the towers, left out on purpose
    try:
        model, info = model_class.from_pretrained(model_dir, dtype=dtype, output_loading_info=True, **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = [k for k in info.get("missing_keys", []) if k]
    if missing:
        raise UserError(
            f"{model_dir} is incomplete: {len(missing)} weights are missing (first: {missing[0]}). "
            "Download the model again with download_model."
        )
    unexpected = [k for k in info.get("unexpected_keys", []) if k]
    if unexpected:
        towers = sorted({k.split(".")[1] if k.startswith("model.") else k.split(".")[0] for k in unexpected})
        print(f"  Loaded the language model only; {len(unexpected)} tensors of {', '.join(towers)} stay on disk "
              "(the fine-tune does not change them).")
    return model


def load_model_for_training(model_dir: Path, plan, train_cfg):
    """The base model with LoRA adapters on its language-model projections, ready for Trainer; and its tokenizer.

    plan: an ftg.device_plan.DevicePlan (method, precision, checkpointing and memory levers).
    """
    from peft import LoraConfig, get_peft_model
    from ftg.chat_template import ChatFormat
    from ftg.chunked_loss import enable_chunked_loss
    from ftg.cpu_embeddings import keep_per_layer_embeddings_on_cpu
    from ftg.device_plan import KEEP_OUT_OF_4BIT, LORA_TARGET_REGEX
    from ftg.turn_rows import look_up_turn_rows_sparsely

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
    model = load_causal_lm(model_dir, plan.dtype, **kwargs)
    # Training passes no cache: the KV-shared layers of Gemma-3n read K/V from their source layer directly, and
    # packed batches need cache=None so transformers builds a per-conversation attention mask from position_ids.
    model.config.use_cache = False
    if plan.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    tokenizer = load_tokenizer(model_dir)
    lora_config = LoraConfig(
        r=train_cfg.lora_r,
        lora_alpha=train_cfg.lora_alpha,
        lora_dropout=train_cfg.lora_dropout,
        target_modules=LORA_TARGET_REGEX,
        # The turn tokens' embedding rows are trained too (a few rows of the tied embedding / lm_head; merge_lora
        # folds them in). In a pretrained (-pt) checkpoint "<end_of_turn>" is an untrained row, a near-copy of the
        # 6,242 "<unusedN>" rows (cosine 0.91 on the 270M), which LoRA alone cannot separate: the tuned model then
        # ends a reply with an "<unusedN>" and goes on talking (issue 14, dev_log 2026-12-02).
        trainable_token_indices=ChatFormat.from_tokenizer(tokenizer).turn_token_ids(tokenizer) or None,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora_config)  # freezes every base weight (towers included)
    look_up_turn_rows_sparsely(model)  # peft's lookup copies the whole 262k-row table each forward
    if plan.loss_chunk_tokens:
        enable_chunked_loss(model, plan.loss_chunk_tokens)
    if plan.per_layer_embeddings_on_cpu:
        keep_per_layer_embeddings_on_cpu(model)
    return model, tokenizer
