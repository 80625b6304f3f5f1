"""The device plan: how a model is trained on this machine, and how much memory that is predicted to take.

plan_device picks the method (QLoRA on CUDA, LoRA elsewhere), the compute precision, the micro-batch, the sequence
length, gradient checkpointing and the memory levers (ftg.chunked_loss, ftg.cpu_embeddings) from the model's config
and the device's memory; estimate_peak_bytes is the memory model it searches with (bench/train_throughput.py prints it
against the measured peak). Nothing here loads weights: the parameter counts come from a model built on the meta
device.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
from dataclasses import dataclass, field

import torch

from ftg.errors import UserError

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


CONVERSATIONS_PER_STEP = 16
"""Target effective batch when grad_accum is auto: micro_batch * grad_accum ≈ 16 conversations per step."""

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
    budget_bytes: int = field(default=0, compare=False)
    """What the plan had to fit in: 85 % of the GPU's memory (room for the CUDA context), half the RAM on the CPU.
    Not compared: two plans that train the same way are equal (bench/train_throughput skips a row that equals ours)."""

    @property
    def fits(self) -> bool:
        return self.predicted_peak_bytes <= self.budget_bytes

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.compute_dtype)

    def peak_bytes(self, counts: dict, micro_batch: int | None = None, seq_len: int | None = None) -> int:
        """estimate_peak_bytes for this plan (its micro-batch and length unless given); counts: parameter_counts."""
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
            "  batches are packed: the conversations of a micro-batch are concatenated, never padded",
            f"  loss computed {self.loss_chunk_tokens} tokens at a time" if self.loss_chunk_tokens
            else "  loss computed over all logits at once (train.loss_chunk_tokens 0)",
            f"  predicted peak memory {self.predicted_peak_bytes / gib:.1f} GiB",
        ]
        if self.per_layer_embeddings_on_cpu:
            lines.append("  Gemma-3n per-layer embedding table kept in RAM, not in GPU memory")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def parameter_counts(model_config, lora_r: int) -> dict:
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
    # LoRA weights in fp32: weight + grad + 2 AdamW moments = 16 bytes per parameter. The turn tokens' trained
    # embedding rows (ftg.models) add a few rows of that and no copy of the table (ftg.turn_rows): not counted.
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


# long: one search over the memory options and its notes; the DevicePlan it returns, one field a line, is 15
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

    counts = parameter_counts(model_config, train_cfg.lora_r)
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
    else:  # it fits: say what the fit cost against the fastest setting, if anything
        notes += traded_away(chosen, (batch_options[0], seq_options[0], ckpt_options[0], offload_options[0]), peak,
                             budget)
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
        budget_bytes=int(budget),
    )


def traded_away(chosen: tuple, fastest: tuple, peak, budget: float) -> list[str]:
    """What the chosen (micro-batch, length, checkpointing, table on CPU) gave up against the fastest choice, and why.

    The chunked loss costs nothing here: its fused path (ftg.chunked_loss) computes the gradient in forward, so
    there is no recompute to trade; checkpointing and the per-layer table on the CPU are the levers that cost time.
    """
    mb, sl, ckpt, on_cpu = chosen
    if chosen == fastest:
        return []
    gib = 1024**3
    lines = []
    if ckpt and not fastest[2]:
        lines.append(f"gradient checkpointing on (each layer's forward runs again in backward, ~1/3 more compute): "
                     f"without it micro-batch {mb} x {sl} tokens is predicted at {peak(mb, sl, False, on_cpu) / gib:.1f}"
                     f" GiB, over the {budget / gib:.1f} GiB budget")
    if on_cpu and not fastest[3]:
        lines.append("Gemma-3n's per-layer embedding table kept in RAM (each step copies its rows to the GPU): "
                     f"on the GPU it is predicted at {peak(mb, sl, ckpt, False) / gib:.1f} GiB, over the budget")
    if mb < fastest[0]:
        lines.append(f"micro-batch {mb}, not {fastest[0]} (smaller matmuls, more accumulation steps): micro-batch "
                     f"{fastest[0]} is predicted at {peak(fastest[0], sl, ckpt, on_cpu) / gib:.1f} GiB")
    if sl < fastest[1]:
        lines.append(f"conversations cut at {sl} tokens, not {fastest[1]}, to fit the budget")
    return lines


def plan_here(model_dir, train_cfg) -> DevicePlan:
    """The plan for training model_dir on this machine: the one finetune_gemma trains with and download_model
    predicts (reads the folder's config.json only)."""
    from transformers import AutoConfig

    device, device_name, memory_bytes, has_bf16 = detect_device()
    return plan_device(AutoConfig.from_pretrained(model_dir), memory_bytes, train_cfg, device, device_name, has_bf16)


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
