"""Merge the best LoRA adapter of a training run into its base model.

Reads:   output/runs/<run>/run.json and best/ (the latest run, or --run NAME), and the base model folder it names.
Writes:  output/merged/ — safetensors shards of at most 2 GB, the tokenizer with the model's chat template, a
         generation_config whose stop tokens include the chat template's end-of-turn token, and merge.json (which run and adapter).
         The folder is written as output/merged.partial and renamed at the end, so it is never half-written.

The base is reloaded in 16-bit (bf16; the demo model's float32 stays float32), never the 4-bit training copy.
Running it again for the same adapter says "already merged" and does nothing (--force merges anyway).

Gemma-3n: transformers 5.x neither creates nor saves k_proj/v_proj/k_norm in the KV-shared layers, but llama.cpp
refuses a model without them. They are restored here, from the base checkpoint when it has them, else as zeros
(those layers reuse earlier layers' K/V, so the values are never used).

Run:
    merge_lora.bat / ./merge_lora.sh
    python scripts/merge_lora.py --run 2026-11-28_1412
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

from ftg.config import add_config_arguments, config_from_args, describe
from ftg.errors import UserError, run_main
from ftg.files import check_free_space, replace_dir, write_json
from ftg.paths import MERGE_RECORD, merged_dir
from ftg.runs import best_adapter_dir, find_run, read_run

SECTIONS = ["paths", "export"]

# Parts of the multimodal checkpoints (Gemma 3 4B+, 3n, 4) that the text-only merge leaves out; llama.cpp puts them in a separate
# --mmproj file anyway, and the fine-tune only changes the language model.
TOWER_MARKERS = ("vision_tower", "audio_tower", "embed_vision", "embed_audio", "multi_modal_projector")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_files(model_dir: Path) -> list[Path]:
    return sorted(Path(model_dir).glob("*.safetensors"))


def checkpoint_keys(model_dir: Path) -> dict[str, Path]:
    """Every tensor name in a safetensors model folder, with the file that holds it."""
    from safetensors import safe_open

    keys = {}
    for path in checkpoint_files(model_dir):
        with safe_open(path, "pt") as handle:
            keys.update({key: path for key in handle.keys()})
    return keys


def merge_dtype(config):
    """float32 stays float32 (the demo model); everything else merges and saves as bf16 (never fp16: Gemma overflows)."""
    import torch

    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return torch.float32 if str(stored) in ("float32", "torch.float32") else torch.bfloat16


def load_base(base: Path, model_class: str, dtype):
    """The base model's text model in `dtype` (the class training used), refusing a checkpoint with missing weights."""
    import transformers

    from ftg.models import load_causal_lm

    cls = getattr(transformers, model_class, None) if model_class else None
    if model_class and cls is None:
        raise UserError(f"run.json names model_class '{model_class}', which transformers {transformers.__version__} "
                        "does not have. Update the environment with prepare_venv.")
    return load_causal_lm(base, dtype, model_class=cls)


def kv_shared_restorations(model, base: Path) -> dict:
    """Gemma-3n: the k_proj/v_proj/k_norm tensors of KV-shared layers that llama.cpp needs and transformers dropped.

    Taken from the base checkpoint when it has them (Google's checkpoints do), else zeros of the right shape.
    Returns {saved key name: tensor}; empty for models without KV sharing.
    """
    import torch
    from safetensors import safe_open

    text_config = model.config.get_text_config()
    if "gemma3n" not in getattr(text_config, "model_type", "") or not getattr(text_config, "num_kv_shared_layers", 0):
        return {}
    names = list(model.state_dict())
    base_keys = checkpoint_keys(base)
    restored = {}
    for index, mode in enumerate(text_config.kv_sharing_modes):
        if mode != "reuse":
            continue
        q_key = next(k for k in names if k.endswith(f"layers.{index}.self_attn.q_proj.weight") and "audio" not in k)
        prefix = q_key[: -len("q_proj.weight")]
        kv_out = text_config.num_key_value_heads * text_config.head_dim
        shapes = {"k_proj.weight": (kv_out, text_config.hidden_size), "v_proj.weight": (kv_out, text_config.hidden_size),
                  "k_norm.weight": (text_config.head_dim,)}
        for name, shape in shapes.items():
            if prefix + name in names:
                continue
            suffix = f"layers.{index}.self_attn.{name}"
            source = next((k for k in base_keys if k.endswith(suffix) and "audio" not in k and "vision" not in k), None)
            if source is not None:
                with safe_open(base_keys[source], "pt") as handle:
                    tensor = handle.get_tensor(source).to(model.dtype)
            else:
                tensor = torch.zeros(shape, dtype=model.dtype)
            restored[prefix + name] = tensor
    return restored


def already_merged(target: Path, record: dict) -> bool:
    path = target / MERGE_RECORD
    if not path.exists():
        return False
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return old.get("adapter_sha256") == record["adapter_sha256"] and old.get("base_model") == record["base_model"]


def save_generation_config(model, tokenizer) -> None:
    """Stop on the chat template's end-of-turn token (<end_of_turn>, Gemma 4's <turn|>) as well as <eos>, as the -it
    checkpoints do."""
    from ftg.chat_template import ChatFormat

    end_of_turn = ChatFormat.from_tokenizer(tokenizer).end_of_turn_id(tokenizer)
    eos = model.generation_config.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
    for token_id in (tokenizer.eos_token_id, end_of_turn):
        if token_id is not None and token_id not in eos:
            eos.append(token_id)
    model.generation_config.eos_token_id = eos
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id


def merge_record(cfg, run_name: str) -> tuple[dict, Path]:
    """What will be merged (the run's best adapter and its base), as merge.json records it; and the adapter folder."""
    run_dir = find_run(cfg.paths.output_dir, run_name)
    info = read_run(run_dir)
    adapter = best_adapter_dir(run_dir)
    base = Path(info.base_model)
    if not (base / "config.json").exists():
        raise UserError(f"the base model of run '{info.run_name}' is gone: {base} has no config.json. "
                        "Put it back (download_model) or train again.")
    loss = info.best_eval_loss
    print(f"Using adapter {adapter} (run {info.run_name}, best step {info.best_step}, eval loss "
          f"{loss if loss is None else f'{loss:.4f}'})")
    if info.status == "running":
        print("  Note: this run is still training (or was stopped); its best adapter so far is used.")
    record = {"run_name": info.run_name, "run_dir": str(run_dir), "adapter": str(adapter),
              "adapter_sha256": file_sha256(adapter / "adapter_model.safetensors"), "base_model": str(base),
              "model_class": info.model_class, "best_step": info.best_step, "best_eval_loss": info.best_eval_loss}
    return record, adapter


def merged_model(base: Path, adapter: Path, model_class: str, dtype):
    """The base in `dtype` with the adapter merged in, refusing an adapter that does not fit the base."""
    from peft import PeftModel

    print(f"Loading the base model {base} in {str(dtype).replace('torch.', '')}...")
    model = load_base(base, model_class, dtype)
    print("Merging the adapter...")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(model, adapter)
    missing = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
    if missing:
        raise UserError(f"the adapter in {adapter} does not fit the base model {base}: {missing[0][:300]}")
    return model.merge_and_unload()


def run(cfg, run_name: str = "", force: bool = False) -> Path:
    """Merge the run's best adapter into its base; returns output/merged/."""
    from transformers import AutoConfig, AutoTokenizer

    from ftg.chat_template import ensure_chat_template

    record, adapter = merge_record(cfg, run_name)
    base = Path(record["base_model"])
    target = merged_dir(cfg.paths.output_dir)
    if not force and already_merged(target, record):
        print(f"Already merged: {target} holds this adapter. Nothing to do (--force merges again).")
        return target
    base_bytes = sum(p.stat().st_size for p in checkpoint_files(base))
    # The merged text model is at most the base checkpoint's size; 10% margin for the tokenizer and rounding.
    check_free_space(cfg.paths.output_dir, int(base_bytes * 1.1), "the merged model")
    base_config = AutoConfig.from_pretrained(base)
    if getattr(base_config, "quantization_config", None):
        raise UserError(f"{base} is a pre-quantized checkpoint; merging needs the 16-bit original. "
                        "Download the normal model with download_model and train on it.")
    dtype = merge_dtype(base_config)
    started = time.time()
    model = merged_model(base, adapter, record["model_class"], dtype)

    state = model.state_dict()
    restored = kv_shared_restorations(model, base)
    if restored:
        source = "zeros" if all(not t.any() for t in restored.values()) else "the base checkpoint / zeros"
        print(f"  Gemma-3n: restored {len(restored)} K/V tensors of the KV-shared layers that transformers does not "
              f"save and llama.cpp needs ({source}).")
        state.update(restored)
    left_out = sorted({m for k in checkpoint_keys(base) for m in TOWER_MARKERS if m in k}
                      - {m for k in state for m in TOWER_MARKERS if m in k})
    if left_out:
        print(f"  Left out on purpose: {', '.join(left_out)} (the fine-tune is text-only; the GGUF is a text model).")
    tokenizer = AutoTokenizer.from_pretrained(adapter if (adapter / "tokenizer_config.json").exists() else base)
    ensure_chat_template(tokenizer)
    save_generation_config(model, tokenizer)

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    print(f"Saving to {target} (shards of at most {cfg.export.max_shard_size})...")
    # save_original_format=False: the merged text model keeps its own key names (model.layers...). By default
    # transformers 5 writes the names of the checkpoint it was loaded from (language_model.model... for a multimodal
    # Gemma), which the text class the config names does not read back: every weight would be "missing".
    model.save_pretrained(partial, state_dict=state, max_shard_size=cfg.export.max_shard_size,
                          save_original_format=False)
    tokenizer.save_pretrained(partial)
    record.update(dtype=str(dtype).replace("torch.", ""), restored_tensors=sorted(restored), left_out=left_out,
                  merged_at=time.strftime("%Y-%m-%d %H:%M:%S"), seconds=round(time.time() - started, 1))
    write_json(partial / MERGE_RECORD, record)
    replace_dir(partial, target)
    print(f"Merged model: {target} ({time.time() - started:.0f} s)")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="", help="run name under output/runs (or a run folder); default: the latest")
    parser.add_argument("--force", action="store_true", help="merge again even if output/merged holds this adapter")
    add_config_arguments(parser, SECTIONS)
    args = parser.parse_args(argv)

    def body() -> int:
        cfg = config_from_args(args)
        print("Settings:\n" + describe(cfg, SECTIONS))
        target = run(cfg, args.run, args.force)
        print(f"\nDone: {target}\nNext: convert_only (writes and checks the GGUF files).")
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
