"""Fine-tune a Gemma base model on your conversations with LoRA (QLoRA on a CUDA GPU), resumable and watchable.

Reads:   data/train_dataset.jsonl and data/eval_dataset.jsonl (written by prepare_dataset), the base model folder
         (config.yaml `model:`, --model, or the one download_model selected last).
Writes:  output/runs/<run-name>/
           checkpoint-<step>/   adapter + optimizer + scheduler + RNG + data position (Trainer's own format, loaded
                                with torch's weights_only=True); complete.json is written last, so a checkpoint
                                without it (a crash mid-save) is skipped. The 2 best by eval loss + the latest stay.
           best/                the LoRA adapter with the lowest eval loss + the tokenizer (official chat template)
           run.json             base model, model class, data hash, settings, best step, status (merge_lora reads it)
           tensorboard/         loss, eval loss, lr, grad norm, tokens/s, padding, GPU memory, sample replies
           loss.png             the loss curves, written at the end
         output/runs/latest_run.txt  the name of the newest run (no symlink: Windows).
Then, unless --no-auto-export: merge_lora and convert write the merged model and the GGUF files (the export
settings apply: --quant Q8_0, --no-style-report, ...).

Run:
    finetune_gemma.bat / ./finetune_gemma.sh                  resume the last run if data and settings match
    python scripts/finetune_gemma.py --max-steps 200 --learning-rate 1e-4
    python scripts/finetune_gemma.py --resume new             start a new run even if one could be resumed
    accelerate launch scripts/finetune_gemma.py               several GPUs (DDP), same script, no changes

Ctrl-C finishes the current step, saves a checkpoint and exits; the next run continues from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

import ftg  # noqa: F401  before transformers, which imports bitsandbytes: see ftg/__init__.py
from transformers import TrainerCallback  # noqa: E402

from ftg.chunked_loss import enable_chunked_loss
from ftg.config import add_config_arguments, config_from_args, describe
from ftg.cpu_embeddings import keep_per_layer_embeddings_on_cpu
from ftg.errors import UserError, run_main
from ftg.files import replace_dir, save_png, write_json
from ftg.models import load_causal_lm, load_tokenizer, resolve_model_dir, text_model_class
from ftg.runs import BEST_DIR, LATEST_FILE, RUN_FILE, find_run, runs_dir as ftg_runs_dir
from ftg.training_data import EVAL_FILE, TRAIN_FILE, build_dataset, data_hash, prompt_and_reference, render_ids

SECTIONS = ["paths", "model", "train", "export"]  # export: the GGUF settings of the auto-export after training

LORA_TARGET_REGEX = r"^model\.(language_model\.)?layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)$"
"""Every attention and MLP projection of the language model, and nothing in the vision or audio towers (whose
layers also have q/k/v_proj). Matches Gemma3ForCausalLM / Gemma3nForCausalLM (`model.layers.N...`) and the
multimodal classes (`model.language_model.layers.N...`)."""

KEEP_OUT_OF_4BIT = [
    "lm_head",
    r".*altup\w*",  # Gemma-3n AltUp: AltUp.predict clamps prediction_coefs.weight in place, impossible on 4-bit
    r".*laurel",  # Gemma-3n LAuReL low-rank residual (rank 64): tiny, precision-sensitive
    r".*per_layer\w*",  # Gemma-3n per-layer input gates/projections
    r".*vision_tower",
    r".*audio_tower",
    r".*embed_vision",
    r".*embed_audio",
    r".*multi_modal_projector",
]
"""Module name patterns bitsandbytes must leave in bf16 (transformers' should_convert_module syntax)."""

CHECKPOINT_MARKER = "complete.json"
"""Written last into a checkpoint folder: the size of every file. A folder without it, or whose files differ from
it, is half-written (killed mid-save) or damaged, and is skipped on resume."""

NOT_TRAINING_SETTINGS = ("resume", "run_name", "auto_export", "sample_prompts", "max_bad_steps", "loss_chunk_tokens",
                         "per_layer_embeddings_on_cpu")
"""Settings that may change between a run and its resumption without making it a different run (the last two move
memory around; the numbers computed stay the same)."""

SAMPLE_REPLY_TOKENS = 48
"""New tokens per sample reply at each evaluation (greedy)."""

CONVERSATIONS_PER_STEP = 16
"""Target effective batch when grad_accum is auto: micro_batch * grad_accum ≈ 16 conversations per step."""


# ----------------------------------------------------------------------------------------------------------------
# Device plan
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class DevicePlan:
    device: str
    """cuda or cpu."""
    device_name: str
    memory_bytes: int
    """Total GPU memory (cuda) or RAM (cpu) the plan must fit in."""
    quantize_4bit: bool
    compute_dtype: str
    """bfloat16 or float32 (never float16: Gemma's activations overflow it)."""
    micro_batch: int
    grad_accum: int
    max_seq_len: int
    gradient_checkpointing: bool
    loss_chunk_tokens: int
    """0: the model's own loss over all logits at once; else ftg.chunked_loss, this many tokens at a time."""
    per_layer_embeddings_on_cpu: bool
    """Gemma-3n's per-layer embedding table stays in RAM (ftg.cpu_embeddings) instead of GPU memory."""
    predicted_peak_bytes: int
    notes: list[str] = field(default_factory=list)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.compute_dtype)

    def peak_bytes(self, counts: dict, micro_batch: int | None = None, seq_len: int | None = None) -> int:
        """estimate_peak_bytes for this plan (its micro-batch and length unless given); counts: _count_parameters."""
        return estimate_peak_bytes(
            counts, self.quantize_4bit, self.dtype.itemsize, micro_batch or self.micro_batch,
            seq_len or self.max_seq_len, self.gradient_checkpointing, self.loss_chunk_tokens,
            self.per_layer_embeddings_on_cpu)

    def describe(self) -> str:
        gib = 1024**3
        method = "QLoRA (4-bit nf4, double quant)" if self.quantize_4bit else "LoRA"
        lines = [
            f"  device: {self.device_name} ({self.memory_bytes / gib:.1f} GiB)",
            f"  method: {method}, compute in {self.compute_dtype}",
            f"  micro-batch {self.micro_batch} conversations x {self.grad_accum} accumulation = "
            f"{self.micro_batch * self.grad_accum} conversations per step",
            f"  max sequence length {self.max_seq_len} tokens, gradient checkpointing "
            f"{'on' if self.gradient_checkpointing else 'off'}",
            "  batches are packed without padding (padding fraction 0%)",
            f"  loss computed {self.loss_chunk_tokens} tokens at a time" if self.loss_chunk_tokens
            else "  loss computed over all logits at once (train.loss_chunk_tokens 0)",
            f"  predicted peak memory {self.predicted_peak_bytes / gib:.1f} GiB",
        ]
        if self.per_layer_embeddings_on_cpu:
            lines.append("  Gemma-3n per-layer embedding table kept in RAM, not in GPU memory")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _count_parameters(model_config, lora_r: int) -> dict:
    """Parameter counts of the text model, built on the meta device from its config (no memory, no download)."""
    from transformers import AutoModelForCausalLM
    from transformers.quantizers.quantizers_utils import should_convert_module

    text_config = model_config.get_text_config()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(text_config)
    counts = {"quantizable": 0, "lora": 0, "per_layer_embedding": 0, "hidden": text_config.hidden_size}
    for name, module in model.named_modules():
        if name.endswith("embed_tokens_per_layer"):  # Gemma-3n: 262k x (layers x 256), frozen, only indexed
            counts["per_layer_embedding"] += module.weight.numel()
        if isinstance(module, torch.nn.Linear):
            if name != "lm_head" and should_convert_module(name, KEEP_OUT_OF_4BIT):
                counts["quantizable"] += module.weight.numel()
            if re.fullmatch(LORA_TARGET_REGEX, name):
                counts["lora"] += lora_r * (module.in_features + module.out_features)
    total = sum(p.numel() for p in model.parameters())  # tied embeddings are counted once
    counts["other"] = total - counts["quantizable"]
    counts["layers"] = text_config.num_hidden_layers
    counts["intermediate"] = (
        max(text_config.intermediate_size)
        if isinstance(text_config.intermediate_size, (list, tuple))
        else text_config.intermediate_size
    )
    counts["vocab"] = text_config.vocab_size
    return counts


def estimate_peak_bytes(
    counts: dict, quantize_4bit: bool, dtype_bytes: int, micro_batch: int, seq_len: int, checkpointing: bool,
    loss_chunk_tokens: int = 0, per_layer_embeddings_on_cpu: bool = False,
) -> int:
    """Rough peak memory of one training step on the training device, in bytes (bench/train_throughput.py prints it
    against the measured peak)."""
    hidden, layers, inter, vocab = counts["hidden"], counts["layers"], counts["intermediate"], counts["vocab"]
    other = counts["other"] - (counts["per_layer_embedding"] if per_layer_embeddings_on_cpu else 0)
    if quantize_4bit:
        # nf4 with double quant: 4.127 bits per weight; everything else (embeddings, norms, skipped modules) in bf16.
        weights = counts["quantizable"] * 4.127 / 8 + other * 2
    else:
        weights = (counts["quantizable"] + other) * dtype_bytes
    # LoRA weights in fp32: weight + grad + 2 AdamW moments = 16 bytes per parameter.
    lora = counts["lora"] * 16
    tokens = micro_batch * seq_len  # packed: one row of all the micro-batch's conversations
    # Saved activations per token and layer, in dtype bytes: ~10 hidden-sized tensors (norms, q/k/v/o, residuals,
    # LoRA inputs) and ~4 intermediate-sized ones (gate, up, act, product).
    per_layer = tokens * (10 * hidden + 4 * inter) * dtype_bytes
    if checkpointing:
        activations = tokens * hidden * dtype_bytes * layers + per_layer  # layer inputs + one layer recomputed
    else:
        activations = per_layer * layers
    if loss_chunk_tokens:
        # One chunk's logits, recomputed in backward: compute-dtype logits, softcap temporaries, the fp32 log-softmax
        # and gradients. bench/loss_memory.py measured 17.4 bytes per entry in fp32 (256 tokens x 262400: 1.09 GiB).
        logits = min(tokens, loss_chunk_tokens) * vocab * (dtype_bytes + 12)
    else:
        # Logits in the compute dtype, their fp32 upcast for the loss, and the gradient of both: the largest single
        # activation with a 262k vocabulary (1024 tokens x 262144 x 12 bytes = 3.2 GB).
        logits = tokens * vocab * (dtype_bytes + 4 + 4 + dtype_bytes)
    return int((weights + lora + activations + logits) * 1.10)  # +10% for allocator slack and temporaries


def _as_int_or_auto(value: str, name: str) -> int | None:
    if str(value).strip().lower() == "auto":
        return None
    try:
        number = int(value)
    except ValueError:
        raise UserError(f"train.{name} must be 'auto' or a whole number, not {value!r}.") from None
    if number < 1:
        raise UserError(f"train.{name} must be at least 1, not {number}.")
    return number


def _auto_on_off(value, name: str) -> bool | None:
    choice = {"auto": None, "on": True, "off": False}.get(str(value).strip().lower(), "?")
    if choice == "?":
        raise UserError(f"train.{name} must be auto, on or off, not {value!r}.")
    return choice


def plan_device(
    model_config, memory_bytes: int, train_cfg, device: str = "cpu", device_name: str = "CPU", has_bf16: bool = True
) -> DevicePlan:
    """Choose method, precision, micro-batch, sequence length and gradient checkpointing for this model and memory.

    memory_bytes: the GPU's (cuda) or the computer's (cpu) total memory. User settings other than 'auto' win.
    """
    notes = []
    cuda = device == "cuda"
    quantize_4bit = cuda and importlib.util.find_spec("bitsandbytes") is not None
    if cuda and not quantize_4bit:
        notes.append("bitsandbytes is not installed: plain LoRA in 16-bit, which needs much more GPU memory")
    compute_dtype = "bfloat16" if cuda and has_bf16 else "float32"
    if cuda and not has_bf16:
        notes.append("this GPU has no bfloat16: computing in float32 (slower, more memory; float16 overflows Gemma)")
    dtype_bytes = 2 if compute_dtype == "bfloat16" else 4

    micro_batch = _as_int_or_auto(train_cfg.micro_batch, "micro_batch")
    seq_len = _as_int_or_auto(train_cfg.max_seq_len, "max_seq_len")
    grad_accum = _as_int_or_auto(train_cfg.grad_accum, "grad_accum")
    checkpointing = _auto_on_off(train_cfg.gradient_checkpointing, "gradient_checkpointing")
    offload = _auto_on_off(train_cfg.per_layer_embeddings_on_cpu, "per_layer_embeddings_on_cpu")
    loss_chunk_tokens = int(train_cfg.loss_chunk_tokens)
    if loss_chunk_tokens < 0:
        raise UserError(f"train.loss_chunk_tokens must be 0 (off) or a positive number, not {loss_chunk_tokens}.")

    counts = _count_parameters(model_config, train_cfg.lora_r)
    budget = memory_bytes * (0.85 if cuda else 0.50)  # room for the CUDA context / the OS and other programs

    def peak(mb, sl, ckpt, on_cpu):
        return estimate_peak_bytes(counts, quantize_4bit, dtype_bytes, mb, sl, ckpt, loss_chunk_tokens, on_cpu)

    seq_options = [seq_len] if seq_len else ([2048, 1024, 512] if cuda else [1024, 512])
    batch_options = [micro_batch] if micro_batch else [8, 4, 2, 1]
    ckpt_options = [checkpointing] if checkpointing is not None else [False, True]
    if not cuda or not counts["per_layer_embedding"]:
        offload_options = [False]  # on the CPU (or without such a table) there is no GPU memory to save
    else:
        offload_options = [offload] if offload is not None else [False, True]
    # The first that fits, in order of preference: the longest context, then the fastest setting (no checkpointing,
    # then the table kept on the GPU), then the biggest micro-batch (product varies the last option fastest).
    choices = itertools.product(seq_options, ckpt_options, offload_options, batch_options)
    chosen = next(((mb, sl, ckpt, on_cpu) for sl, ckpt, on_cpu, mb in choices if peak(mb, sl, ckpt, on_cpu) <= budget),
                  None)
    if not chosen:
        chosen = (batch_options[-1], seq_options[-1], ckpt_options[-1], offload_options[-1])
        notes.append(
            f"even micro-batch {chosen[0]} at {chosen[1]} tokens is predicted to need "
            f"{peak(*chosen) / 1024**3:.1f} GiB of {memory_bytes / 1024**3:.1f} GiB: it may run out of memory; "
            "lower --max-seq-len or choose a smaller model"
        )
    mb, sl, ckpt, on_cpu = chosen
    if grad_accum is None:
        grad_accum = max(1, round(CONVERSATIONS_PER_STEP / mb))
    return DevicePlan(
        device=device,
        device_name=device_name,
        memory_bytes=int(memory_bytes),
        quantize_4bit=quantize_4bit,
        compute_dtype=compute_dtype,
        micro_batch=mb,
        grad_accum=grad_accum,
        max_seq_len=sl,
        gradient_checkpointing=ckpt,
        loss_chunk_tokens=loss_chunk_tokens,
        per_layer_embeddings_on_cpu=on_cpu,
        predicted_peak_bytes=peak(mb, sl, ckpt, on_cpu),
        notes=notes,
    )


def detect_device() -> tuple[str, str, int, bool]:
    """(device, name, memory bytes, has bf16) of this machine: the GPU of this process, or the CPU's total RAM.

    Totals, not what is free right now: the plan must come out the same on the next run, or it would not resume.
    """
    if torch.cuda.is_available():
        index = int(os.environ.get("LOCAL_RANK", 0))
        props = torch.cuda.get_device_properties(index)
        return "cuda", props.name, props.total_memory, torch.cuda.is_bf16_supported()
    import psutil

    return "cpu", "CPU", psutil.virtual_memory().total, False


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------


def load_model_for_training(model_dir: Path, plan: DevicePlan, train_cfg):
    """The base model with LoRA adapters on its language-model projections, ready for Trainer; and its tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig

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


# ----------------------------------------------------------------------------------------------------------------
# Callbacks: the small pieces Trainer does not have
# ----------------------------------------------------------------------------------------------------------------

class NonFiniteGuard(TrainerCallback):
    """Skip an optimizer step whose gradients hold NaN/inf (a NaN loss gives NaN gradients); stop after N in a row."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_a_row = 0
        self.skipped_steps: list[int] = []
        self.gave_up = False

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        if all(torch.isfinite(g).all() for g in grads):
            self.in_a_row = 0
            return
        for p in model.parameters():
            p.grad = None  # the optimizer skips parameters without a gradient: no update this step
        step = state.global_step + 1
        self.in_a_row += 1
        self.skipped_steps.append(step)
        print(f"\nWARNING: step {step}: non-finite loss or gradient, step skipped ({self.in_a_row} in a row)")
        if self.in_a_row >= self.limit:
            self.gave_up = True
            control.should_training_stop = True


class StopOnCtrlC(TrainerCallback):
    """First Ctrl-C: finish this step, save a checkpoint, stop. Second Ctrl-C: stop at once."""

    def __init__(self):
        self.requested = False

    def install(self):
        """Catch Ctrl-C; returns the handler it replaced (None where signals cannot be caught)."""
        if threading.current_thread() is threading.main_thread():  # signal handlers only work there
            return signal.signal(signal.SIGINT, self._handler)
        return None

    def _handler(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nCtrl-C: finishing this step and saving a checkpoint (press Ctrl-C again to quit without saving)")

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


class ProgressMetrics(TrainerCallback):
    """Adds tokens/s, padding fraction and GPU memory to each training log (placed before TensorBoard's callback)."""

    def __init__(self):
        self.last_time = None
        self.last_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_time, self.last_tokens = time.time(), state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return
        now = time.time()
        tokens = state.num_input_tokens_seen
        if self.last_time is not None and now > self.last_time:
            logs["tokens_per_second"] = round((tokens - self.last_tokens) / (now - self.last_time), 1)
        self.last_time, self.last_tokens = now, tokens
        logs["padding_fraction"] = 0.0  # packed batches: conversations are concatenated, never padded
        if torch.cuda.is_available():
            logs["gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
            logs["gpu_memory_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 1024**3, 2)


class SampleReplies(TrainerCallback):
    """At each evaluation, write the replies to a few fixed eval prompts to TensorBoard as text (base model at 0)."""

    def __init__(self, writer, tokenizer, samples: list[tuple[list[dict], str]]):
        self.writer, self.tokenizer, self.samples = writer, tokenizer, samples

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not self.samples or not state.is_world_process_zero:
            return
        if state.global_step == 0:
            with model.disable_adapter():
                text = self.replies(model)
            self.writer.add_text("replies/base_model", text, 0)
        else:
            self.writer.add_text("replies/fine_tuned", self.replies(model), state.global_step)
        self.writer.flush()

    @torch.no_grad()
    def replies(self, model) -> str:
        was_training = model.training
        model.eval()
        parts = []
        for number, (prompt, reference) in enumerate(self.samples, start=1):
            ids = render_ids(self.tokenizer, prompt, add_generation_prompt=True)
            inputs = torch.tensor([ids], device=model.device)
            output = model.generate(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=SAMPLE_REPLY_TOKENS,
                do_sample=False,
                use_cache=True,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            reply = self.tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True)
            parts.append(
                f"**{number}. {prompt[-1]['content'][:300]}**\n\n"
                f"model: {reply.strip()}\n\nreference: {reference[:300]}"
            )
        if was_training:
            model.train()
        return "\n\n---\n\n".join(parts)


class CheckpointKeeper(TrainerCallback):
    """After each save: mark the checkpoint complete, keep the 2 best by eval loss + the latest, refresh best/ and
    run.json."""

    def __init__(self, run_dir: Path, run_record: dict, tokenizer):
        self.run_dir, self.record, self.tokenizer = run_dir, run_record, tokenizer

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        latest = self.run_dir / f"checkpoint-{state.global_step}"
        write_marker(latest)
        eval_losses = {e["step"]: e["eval_loss"] for e in state.log_history if "eval_loss" in e}
        complete = {int(p.name.split("-")[1]): p for p in checkpoint_dirs(self.run_dir) if checkpoint_problem(p) == ""}
        ranked = sorted((eval_losses[s], s) for s in complete if s in eval_losses and math.isfinite(eval_losses[s]))
        keep = {state.global_step} | {s for _, s in ranked[:2]}
        for step, path in complete.items():
            if step not in keep:
                shutil.rmtree(path, ignore_errors=True)
        if ranked and ranked[0][1] != self.record.get("best_step"):
            best_loss, best_step = ranked[0]
            copy_adapter(complete[best_step], self.run_dir / BEST_DIR, self.tokenizer)
            self.record.update(best_step=best_step, best_eval_loss=best_loss)
        self.record["last_step"] = state.global_step
        write_json(self.run_dir / RUN_FILE, self.record)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint files
# ----------------------------------------------------------------------------------------------------------------


def write_marker(checkpoint: Path) -> None:
    sizes = {p.name: p.stat().st_size for p in sorted(checkpoint.iterdir()) if p.is_file() and p.name != CHECKPOINT_MARKER}
    write_json(checkpoint / CHECKPOINT_MARKER, {"files": sizes})


def checkpoint_problem(checkpoint: Path) -> str:
    """Why this checkpoint cannot be resumed from ('' when it is complete)."""
    marker = checkpoint / CHECKPOINT_MARKER
    if not marker.exists():
        return "it was not finished (killed while saving?)"
    try:
        sizes = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError):
        return f"its {CHECKPOINT_MARKER} is damaged"
    for name, size in sizes.items():
        path = checkpoint / name
        if not path.exists():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size:,} bytes instead of {size:,} (cut short)"
    return ""


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """checkpoint-<step> folders, oldest step first."""
    found = [p for p in run_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


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
# Runs: new or resumed
# ----------------------------------------------------------------------------------------------------------------


def latest_run_dir(runs_dir: Path) -> Path | None:
    """The newest run (named in latest_run.txt, else the run.json modified last), or None without runs."""
    try:
        return find_run(runs_dir.parent)
    except UserError:
        return None


def settings_changes(old: dict, new: dict) -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        if key in NOT_TRAINING_SETTINGS:
            continue
        if old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return changes


def choose_run(runs_dir: Path, record: dict, policy: str, run_name: str) -> tuple[Path, Path | None, str]:
    """(run folder, checkpoint to resume from or None, what we decided and why)."""
    if policy not in ("auto", "new", "force"):
        raise UserError(f"train.resume must be auto, new or force, not {policy!r}.")
    previous = latest_run_dir(runs_dir) if policy != "new" else None
    if run_name:
        previous = runs_dir / run_name if (runs_dir / run_name / RUN_FILE).exists() else None
    if previous is not None:
        old = json.loads((previous / RUN_FILE).read_text(encoding="utf-8"))
        changes = [] if policy == "force" else settings_changes(
            {**old["settings"], "data_hash": old["data_hash"], "base_model": old["base_model"]},
            {**record["settings"], "data_hash": record["data_hash"], "base_model": record["base_model"]},
        )
        if changes:
            why = "; ".join(changes[:6]) + (f" (+{len(changes) - 6} more)" if len(changes) > 6 else "")
            if run_name:
                raise UserError(
                    f"run '{run_name}' was trained with other data or settings ({why}). "
                    "Pick another --run-name, or use --resume force to continue it anyway."
                )
            message = f"Starting a new run: the last run {previous.name} differs ({why})."
        else:
            checkpoint = newest_complete_checkpoint(previous)
            if old.get("status") == "finished":
                return previous, None, f"Run {previous.name} already finished with the same data and settings."
            if checkpoint is not None:
                return previous, checkpoint, (
                    f"Resuming run {previous.name} from {checkpoint.name}: same data and settings"
                    + (" (--resume force)" if policy == "force" else "")
                    + ". Use --resume new to start over."
                )
            message = f"Run {previous.name} has no complete checkpoint yet: starting it again from step 0."
            return previous, None, message
    else:
        message = "Starting a new run."
    name = run_name or datetime.now().strftime("%Y-%m-%d_%H%M")
    run_dir = runs_dir / name
    suffix = 2
    while run_dir.exists():
        run_dir = runs_dir / f"{name}-{suffix}"
        suffix += 1
    return run_dir, None, message


def newest_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that is complete; damaged or half-written ones are reported and removed."""
    for checkpoint in reversed(checkpoint_dirs(run_dir)):
        problem = checkpoint_problem(checkpoint)
        if not problem:
            return checkpoint
        print(f"WARNING: skipping {checkpoint.name}: {problem}. Deleting it; training continues from an earlier one.")
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None


# ----------------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------------


def build_trainer(model, tokenizer, train_dataset, eval_dataset, plan: DevicePlan, train_cfg, output_dir: Path,
                  callbacks: list | None = None, eval_on_start: bool = False):
    """transformers' Trainer with packed (padding-free) batches and our settings; no hand-written loop."""
    from transformers import DataCollatorWithFlattening, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=plan.micro_batch,
        per_device_eval_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.grad_accum,
        learning_rate=train_cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=train_cfg.warmup_ratio,  # a float < 1 is a fraction of the total steps
        weight_decay=0.0,
        max_grad_norm=1.0,
        num_train_epochs=train_cfg.epochs,
        max_steps=train_cfg.max_steps if train_cfg.max_steps > 0 else -1,
        optim="adamw_torch",
        bf16=plan.compute_dtype == "bfloat16",
        use_cpu=plan.device == "cpu",
        activation_checkpointing=plan.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False},
        eval_strategy="steps",
        eval_steps=train_cfg.eval_every,
        eval_on_start=eval_on_start,
        save_strategy="steps",
        save_steps=train_cfg.eval_every,
        logging_steps=max(1, min(10, train_cfg.eval_every // 5)),
        logging_first_step=True,
        prediction_loss_only=True,  # never keep eval logits (tokens x 262k vocabulary)
        include_num_input_tokens_seen=True,
        remove_unused_columns=False,
        report_to="none",  # run() adds TensorBoard itself: its own writer, placed after ProgressMetrics
        seed=train_cfg.seed,
        data_seed=train_cfg.seed,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,  # each checkpoint is a complete adapter folder (+33 MB tokenizer.json, ~1 s)
        # Conversations of a micro-batch are concatenated into one row with position_ids restarting at 0 for each;
        # transformers turns that into a block-diagonal attention mask, so nothing is padded and nothing leaks.
        data_collator=DataCollatorWithFlattening(return_position_ids=True),
        callbacks=callbacks or [],
    )


def write_loss_plot(log_history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and math.isfinite(e["loss"])]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot(*zip(*train), label="train loss", alpha=0.7)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (cross-entropy per assistant token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


def export_after_training(cfg) -> None:
    """Merge the best adapter and write the checked GGUF files (convert merges first), as the seed promised."""
    import convert

    print("\nAuto-export: merging the adapter, then converting to GGUF (skip with --no-auto-export)")
    convert.run(cfg)


def run(cfg) -> Path:
    """Train (or resume) a LoRA adapter on data/*.jsonl; return the run folder."""
    from accelerate import PartialState
    from transformers import AutoConfig, set_seed
    from transformers.integrations import TensorBoardCallback
    from torch.utils.tensorboard import SummaryWriter

    train_cfg = cfg.train
    state = PartialState()
    model_dir = resolve_model_dir(cfg)
    files = [cfg.paths.data_dir / TRAIN_FILE, cfg.paths.data_dir / EVAL_FILE]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise UserError(f"no training data: {', '.join(missing)} not found. Run prepare_dataset first.")
    if train_cfg.eval_every < 1:
        raise UserError(f"train.eval_every must be at least 1, not {train_cfg.eval_every}.")

    model_config = AutoConfig.from_pretrained(model_dir)
    device, device_name, memory, has_bf16 = detect_device()
    plan = plan_device(model_config, memory, train_cfg, device, device_name, has_bf16)
    print(f"Base model: {model_dir}")
    print("Device plan:\n" + plan.describe())

    settings = {**dataclasses.asdict(train_cfg), "plan": {
        k: getattr(plan, k) for k in ("quantize_4bit", "compute_dtype", "micro_batch", "grad_accum", "max_seq_len",
                                      "gradient_checkpointing")}}
    record = {
        "run_name": "",
        "base_model": str(model_dir.resolve()),
        "model_class": "",  # set after loading: the class actually trained, which merge_lora loads again
        "data_hash": data_hash(files),
        "settings": settings,
        "best_step": None,
        "best_eval_loss": None,
        "status": "running",
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    runs_dir = ftg_runs_dir(cfg.paths.output_dir)
    with state.main_process_first():  # under accelerate launch, rank 0 decides the run; the others follow it
        if state.is_main_process:
            run_dir, checkpoint, decision = choose_run(runs_dir, record, train_cfg.resume, train_cfg.run_name)
            run_dir.mkdir(parents=True, exist_ok=True)
            (runs_dir / LATEST_FILE).write_text(run_dir.name, encoding="utf-8")
        else:
            run_dir = runs_dir / (runs_dir / LATEST_FILE).read_text(encoding="utf-8").strip()
            checkpoint = newest_complete_checkpoint(run_dir) if (run_dir / RUN_FILE).exists() else None
            decision = ""
    print(decision)
    if (run_dir / RUN_FILE).exists():
        old = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
        if old.get("status") == "finished" and checkpoint is None:
            print(f"Nothing to train. Adapter: {run_dir / 'best'}. Use --resume new to train again.")
            return run_dir
        if checkpoint is not None:  # resuming: the best so far still counts
            for key in ("best_step", "best_eval_loss", "started"):
                record[key] = old.get(key, record[key])
    record["run_name"] = run_dir.name

    set_seed(train_cfg.seed)  # LoRA init; Trainer seeds the data order itself
    model, tokenizer = load_model_for_training(model_dir, plan, train_cfg)
    model.print_trainable_parameters()
    record["model_class"] = type(model.get_base_model()).__name__
    if state.is_main_process:
        write_json(run_dir / RUN_FILE, record)
    train_ds, train_stats, _ = build_dataset(tokenizer, files[0], plan.max_seq_len)
    eval_ds, eval_stats, eval_conversations = build_dataset(tokenizer, files[1], plan.max_seq_len)
    print(train_stats.summary("train", plan.max_seq_len))
    print(eval_stats.summary("eval", plan.max_seq_len))
    if len(train_ds) == 0 or len(eval_ds) == 0:
        raise UserError(f"no usable conversations in {files[0] if len(train_ds) == 0 else files[1]}. "
                        "Check the skipped lines above, then run prepare_dataset again.")
    samples = [prompt_and_reference(m) for m in eval_conversations[: train_cfg.sample_prompts]]

    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    guard, ctrl_c = NonFiniteGuard(train_cfg.max_bad_steps), StopOnCtrlC()
    callbacks = [guard, ctrl_c, ProgressMetrics(), TensorBoardCallback(tb_writer=writer),
                 SampleReplies(writer, tokenizer, samples), CheckpointKeeper(run_dir, record, tokenizer)]
    trainer = build_trainer(model, tokenizer, train_ds, eval_ds, plan, train_cfg, run_dir, callbacks,
                            eval_on_start=checkpoint is None)
    print(f"Training: TensorBoard logs in {run_dir / 'tensorboard'} (watch with check_tensorboard_runs)")
    previous_handler = ctrl_c.install()
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        writer.close()

    if state.is_main_process:
        write_loss_plot(trainer.state.log_history, run_dir / "loss.png")
    if guard.gave_up:
        raise UserError(
            f"training stopped: {guard.in_a_row} steps in a row (up to step {guard.skipped_steps[-1]}) had NaN or "
            f"infinite loss/gradients. Lower --learning-rate (now {train_cfg.learning_rate:g}, try half) and run "
            "finetune_gemma again; it starts a new run because the settings changed."
        )
    if ctrl_c.requested:
        print(f"Saved checkpoint-{trainer.state.global_step} in {run_dir}. Run finetune_gemma again to continue.")
        raise KeyboardInterrupt
    record["status"] = "finished"
    record["finished"] = datetime.now().isoformat(timespec="seconds")
    record["last_step"] = trainer.state.global_step
    if state.is_main_process:
        write_json(run_dir / RUN_FILE, record)
    if record["best_step"] is not None:
        print(f"Best eval loss {record['best_eval_loss']:.4f} at step {record['best_step']}.")
    print(f"Done: {run_dir / 'best'}  (loss curves: {run_dir / 'loss.png'})")
    if train_cfg.auto_export and state.is_main_process:
        export_after_training(cfg)
    else:
        print("Next: merge_lora (joins the adapter to the base model), then convert (writes the GGUF files).")
    return run_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, SECTIONS)
    args = parser.parse_args(argv)

    def body() -> int:
        cfg = config_from_args(args)
        print("Settings:\n" + describe(cfg, SECTIONS))
        run(cfg)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
