"""Training speed against the peers, side by side on the same machine (issue 17).

Rows, each in its own subprocess (so one row's memory never helps or hurts the next), interleaved A B C D A B C D:
  ours           finetune_gemma's plan_device + load_model_for_training + build_trainer (as bench/train_throughput.py
                 runs them): packed rows, assistant-only labels, ftg.chunked_loss (fused), no eval or sample replies
  ours_recompute ours with the chunked loss's issue-7 path (logits recomputed in backward): --rows to include it
  trl_default    TRL's SFTTrainer with its defaults (padded batches, loss on every token, gradient checkpointing on)
  trl_best       TRL's best CPU recipe: padding_free + assistant_only_loss (its gemma3 training template), no
                 checkpointing
  llamafactory   LLaMA-Factory in its own venv (<work>/venv-llamafactory, it pins its own transformers), through its
                 run_exp() with the yaml keys `llamafactory-cli train` reads; its defaults otherwise (padded batches,
                 assistant-only loss, gradient checkpointing on). Skipped, with a message, when the venv is absent.
Same model folder, same data, same rank/alpha/dropout/targets, learning rate and schedule, micro-batch x accumulation
(= conversations per step), steps, float32, seed. Every row counts tokens the same way: a wrapper around
transformers' Trainer.training_step (in each venv) sees every micro-batch; real tokens = attention_mask != 0 where
the batch has a mask, else every token (packed rows have none); padding = 1 - real / fed.

Per row: s/step (median of the timed steps, after --warmup), real tokens/s (real tokens of the timed steps / their
seconds), padding, labelled tokens per step, peak RSS (the row's process, loading included: ru_maxrss), loss at the
last step (a mean over the tokens that row labels: TRL's default labels every token, the others also the newline
after each end-of-turn), held-out loss (every row's trained model on the same --heldout conversations of
eval_dataset.jsonl, tokenized once with finetune_gemma's labels: the comparable one), torch threads. Then ours /
each peer.

Reads:  --model (default: the real Gemma 3 270M demo folder), --data (a prepare_conversation_data output folder; by
        default dataset/sample is prepared into <work>/data once).
Writes: <out>/peer_compare.json (every row, rewritten after each), and the table on stdout.
Run:
    python bench/peer_compare.py --steps 4 --repeats 2                 the real 270M, demo data (tens of minutes)
    python bench/peer_compare.py --tiny --out /tmp/pc                  a tiny random Gemma 3 (tests/test_peer_compare.py)
    python -m venv <work>/venv-llamafactory && <work>/venv-llamafactory/bin/pip install torch==2.13.0 llamafactory
The machine load (uptime) is printed beside the table: on a shared machine the figures are noise-prone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORK = Path("/tmp/peer_compare")
ROWS = ("ours", "trl_default", "trl_best", "llamafactory")
OPTIONAL_ROWS = ("ours_recompute",)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
"""= ftg.device_plan.LORA_TARGET_REGEX on a text-only Gemma: every attention and MLP projection."""


# ----------------------------------------------------------------------------------------------------------------
# Measuring (runs inside each row's process, in any venv: torch + transformers only)
# ----------------------------------------------------------------------------------------------------------------


def count_tokens_of_every_micro_batch(batches: list) -> None:
    """Wrap transformers.Trainer.training_step: append (real, fed, labelled) tokens of each micro-batch."""
    import transformers

    original = transformers.Trainer.training_step

    def training_step(self, model, inputs, *args, **kwargs):
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        real = int((mask != 0).sum()) if mask is not None and mask.dim() == 2 else ids.numel()
        labels = inputs.get("labels")
        labelled = int((labels != -100).sum()) if labels is not None else 0
        batches.append((real, ids.numel(), labelled))
        return original(self, model, inputs, *args, **kwargs)

    transformers.Trainer.training_step = training_step


def step_clock(heldout: list[dict]):
    """A TrainerCallback that records the wall clock at the end of each optimizer step and each logged loss, and at
    the end of training the loss on the held-out samples."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.start, self.ends, self.losses, self.heldout_loss = 0.0, [], [], float("nan")

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.heldout_loss = heldout_loss(model, heldout) if heldout and model is not None else float("nan")

    return StepClock()


def heldout_loss(model, samples: list[dict]) -> float:
    """Mean cross-entropy per labelled token of the trained model on the same held-out tokens for every row.

    The rows label different tokens while training (the peers also train the newline after each end-of-turn, TRL's
    default trains every token), so their last training losses are means over different sets. These samples were
    tokenized once, by the driver, with finetune_gemma's labels (each reply and its end-of-turn token)."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for sample in samples:
            input_ids = torch.tensor([sample["input_ids"]], device=device)
            labels = torch.tensor([sample["labels"]], device=device)
            labelled = int((labels[:, 1:] != -100).sum())  # the model's loss is the mean over shifted labels
            total += float(model(input_ids=input_ids, labels=labels).loss) * labelled
            count += labelled
    model.train(was_training)
    return total / count


def summarise(clock, batches: list, grad_accum: int, warmup: int) -> dict:
    ends = [clock.start] + clock.ends
    durations = [ends[s + 1] - ends[s] for s in range(len(clock.ends))]
    timed = range(warmup, len(durations))
    steps_of = [batches[s * grad_accum:(s + 1) * grad_accum] for s in range(len(durations))]
    real_timed = sum(b[0] for s in timed for b in steps_of[s])
    seconds = sum(durations[s] for s in timed)
    real_all, fed_all = sum(b[0] for b in batches), sum(b[1] for b in batches)
    import torch

    return {
        "steps": len(durations), "timed_steps": len(timed), "step_seconds": durations,
        "median_step_s": statistics.median(durations[warmup:]) if len(timed) else float("nan"),
        "real_tokens_timed": real_timed, "timed_seconds": seconds,
        "real_tokens_per_s": real_timed / seconds if seconds > 0 else float("nan"),
        "real_tokens": real_all, "fed_tokens": fed_all,
        "padding_fraction": 1 - real_all / fed_all if fed_all else float("nan"),
        "labelled_tokens_per_step": sum(b[2] for b in batches) / max(1, len(durations)),
        "micro_batches": len(batches),
        "losses": clock.losses, "last_loss": clock.losses[-1] if clock.losses else float("nan"),
        "heldout_loss": clock.heldout_loss,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
        "torch_threads": torch.get_num_threads(),
        "versions": {m: __import__(m).__version__ for m in ("torch", "transformers", "peft")},
    }


# ----------------------------------------------------------------------------------------------------------------
# The rows (each function runs in the row's own process)
# ----------------------------------------------------------------------------------------------------------------


def row_ours(job: dict, clock, fused: bool = True):
    """finetune_gemma's own path: plan, loader, Trainer (eval and sample replies off: no peer does them here)."""
    import dataclasses

    sys.path.insert(0, str(ROOT / "scripts"))
    from transformers import AutoConfig

    from finetune_gemma import build_trainer
    from ftg.chunked_loss import enable_chunked_loss
    from ftg.config import TrainConfig
    from ftg.device_plan import detect_device, plan_device
    from ftg.models import load_model_for_training
    from ftg.training_data import build_dataset

    cfg = TrainConfig(lora_r=job["lora_r"], lora_alpha=job["lora_alpha"], lora_dropout=job["lora_dropout"],
                      learning_rate=job["learning_rate"], warmup_ratio=job["warmup"], max_steps=job["steps"],
                      eval_every=10**6, seed=job["seed"])
    device, name, memory, bf16 = detect_device()
    plan = plan_device(AutoConfig.from_pretrained(job["model"]), memory, cfg, device, name, bf16)
    plan = dataclasses.replace(plan, micro_batch=job["micro_batch"], grad_accum=job["grad_accum"],
                               max_seq_len=job["max_length"])
    model, tokenizer = load_model_for_training(Path(job["model"]), plan, cfg)
    if not fused:
        enable_chunked_loss(model, plan.loss_chunk_tokens, fused=False)
    train_ds, _, _ = build_dataset(tokenizer, Path(job["train_file"]), plan.max_seq_len)
    trainer = build_trainer(model, tokenizer, train_ds, train_ds.select(range(2)), plan, cfg,
                            Path(job["run_dir"]), callbacks=[clock])
    trainer.args.logging_steps = 1  # build_trainer logs every min(10, eval_every // 5) steps; every row logs each step
    trainer.train()
    return {"gradient_checkpointing": plan.gradient_checkpointing, "plan_notes": plan.notes}


def row_trl(job: dict, clock, best: bool):
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    dataset = load_dataset("json", data_files=job["train_file"], split="train").select_columns(["messages"])
    # padding_free without packing refuses a max_length (it could not enforce it): the data stage already cut every
    # conversation at 1024 tokens (data.max_example_tokens), so None changes nothing here.
    recipe = dict(padding_free=True, assistant_only_loss=True, gradient_checkpointing=False) if best else {}
    max_length = None if best else job["max_length"]
    args = SFTConfig(
        output_dir=job["run_dir"], max_steps=job["steps"], per_device_train_batch_size=job["micro_batch"],
        gradient_accumulation_steps=job["grad_accum"], learning_rate=job["learning_rate"],
        lr_scheduler_type="cosine", warmup_steps=job["warmup"], weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=1, save_strategy="no", report_to="none", bf16=False, use_cpu=True,
        max_length=max_length, seed=job["seed"], data_seed=job["seed"], dataloader_num_workers=0, **recipe)
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    if best:
        # assistant_only_loss needs {% generation %} markers. TRL swaps in its own gemma3 training template when the
        # tokenizer has the official Gemma 3 template, byte for byte; ours renders the same text but is spelled with
        # \n escapes, so it is replaced by TRL's copy (checked to render the same on the first conversation).
        from trl.chat_template_utils import gemma3_chat_template

        first = dataset[0]["messages"]
        ours = tokenizer.apply_chat_template(first, tokenize=False)
        tokenizer.chat_template = gemma3_chat_template
        if tokenizer.apply_chat_template(first, tokenize=False) != ours:
            raise SystemExit("TRL's gemma3 template renders differently from the model's: rows not comparable")
    peft = LoraConfig(r=job["lora_r"], lora_alpha=job["lora_alpha"], lora_dropout=job["lora_dropout"],
                      target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft, callbacks=[clock])
    trainer.train()
    return {"gradient_checkpointing": bool(args.gradient_checkpointing), "recipe": recipe}


def row_llamafactory(job: dict, clock):
    import types

    try:
        import torchaudio  # noqa: F401
        note = ""
    except ImportError:
        # llamafactory/data/mm_plugin.py imports torchaudio at import time, for audio inputs only. PyPI has no
        # torchaudio built for torch 2.13 (the torch every row here runs), so text SFT gets an empty stand-in.
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
        note = "torchaudio absent: an empty module stands in (audio only; text SFT never calls it)"
    from llamafactory.train.tuner import run_exp

    work = Path(job["run_dir"])
    data_dir = work / "lf_data"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "dataset_info.json").write_text(json.dumps({"ftg": {
        "file_name": str(job["train_file"]), "formatting": "sharegpt", "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"}}}), encoding="utf-8")
    args = {  # the keys of a `llamafactory-cli train` yaml
        "model_name_or_path": job["model"], "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_rank": job["lora_r"], "lora_alpha": job["lora_alpha"], "lora_dropout": job["lora_dropout"],
        "lora_target": ",".join(LORA_TARGETS), "dataset": "ftg", "dataset_dir": str(data_dir),
        # "gemma" is Gemma 3's text format; LLaMA-Factory's "gemma3" adds the image plugin, which wants a processor
        "template": "gemma",
        "cutoff_len": job["max_length"], "overwrite_cache": True, "output_dir": str(work / "out"),
        "logging_steps": 1, "save_strategy": "no", "plot_loss": False, "overwrite_output_dir": True,
        "report_to": "none", "per_device_train_batch_size": job["micro_batch"],
        "gradient_accumulation_steps": job["grad_accum"], "learning_rate": job["learning_rate"],
        "max_steps": job["steps"], "lr_scheduler_type": "cosine", "warmup_steps": job["warmup"],
        "weight_decay": 0.0, "max_grad_norm": 1.0, "bf16": False, "fp16": False, "seed": job["seed"],
        "data_seed": job["seed"], "use_cpu": True, "dataloader_num_workers": 0,
    }
    (work / "llamafactory.yaml").write_text("\n".join(f"{k}: {v}" for k, v in args.items()) + "\n")
    run_exp(args=args, callbacks=[clock])
    return {"gradient_checkpointing": True, "yaml": str(work / "llamafactory.yaml"), "note": note}


def worker(job_file: Path) -> None:
    """One row in this process: train, then write <job>.result.json."""
    job = json.loads(job_file.read_text(encoding="utf-8"))
    import torch
    from transformers import set_seed

    torch.manual_seed(job["seed"])
    set_seed(job["seed"])
    batches: list = []
    count_tokens_of_every_micro_batch(batches)
    clock = step_clock(job["heldout"])
    row = job["row"]
    if row == "ours":
        extra = row_ours(job, clock)
    elif row == "ours_recompute":
        extra = row_ours(job, clock, fused=False)
    elif row in ("trl_default", "trl_best"):
        extra = row_trl(job, clock, best=row == "trl_best")
    else:
        extra = row_llamafactory(job, clock)
    result = {"row": row, **summarise(clock, batches, job["grad_accum"], job["warmup_steps_untimed"]), **extra}
    job_file.with_suffix(".result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------
# The driver (the project's venv)
# ----------------------------------------------------------------------------------------------------------------


def tiny_model(work: Path) -> Path:
    """A 2-layer random Gemma 3 (hidden 64) with the real Gemma tokenizer and chat template (seconds to build)."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    sys.path.insert(0, str(ROOT / "scripts"))
    from download_model import build_demo_model, demo_cache_dir

    folder = work / "tiny-gemma3"
    if (folder / "config.json").exists():
        return folder
    demo = build_demo_model(demo_cache_dir())
    config = Gemma3TextConfig(
        vocab_size=262144, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, layer_types=["sliding_attention", "full_attention"], sliding_window=64,
        max_position_embeddings=2048, pad_token_id=0, bos_token_id=2, eos_token_id=1)
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(demo).save_pretrained(folder)
    return folder


def tiny_data(work: Path) -> Path:
    """64 short two- and four-message chats, 56 in train_dataset.jsonl and 8 in eval_dataset.jsonl (seeded; no export
    to prepare)."""
    import random

    folder = work / "tiny-data"
    folder.mkdir(parents=True, exist_ok=True)
    generator = random.Random(0)
    words = "ahoy sea wind boat fish rope sail port tide deck mast crew storm calm map gold".split()
    lines = []
    for number in range(64):
        messages = []
        for _ in range(generator.choice([1, 2])):
            messages.append({"role": "user", "content": " ".join(generator.choices(words, k=generator.randint(3, 30)))})
            messages.append({"role": "assistant",
                             "content": " ".join(generator.choices(words, k=generator.randint(3, 40)))})
        lines.append(json.dumps({"messages": messages, "conversation_id": f"tiny-{number}"}))
    (folder / "train_dataset.jsonl").write_text("\n".join(lines[:56]) + "\n", encoding="utf-8")
    (folder / "eval_dataset.jsonl").write_text("\n".join(lines[56:]) + "\n", encoding="utf-8")
    return folder


def demo_data(work: Path, model: Path) -> Path:
    folder = work / "data"
    if not (folder / "train_dataset.jsonl").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_conversation_data.py"), "--input",
                        str(ROOT / "dataset" / "sample"), "--me", "Sunny", "--output", str(folder), "--model",
                        str(model)], check=True, stdout=subprocess.DEVNULL)
    return folder


def heldout_samples(model: Path, eval_file: Path, limit: int, max_length: int) -> list[dict]:
    """The first `limit` usable conversations of eval_file, tokenized as finetune_gemma does (ftg.training_data)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from ftg.models import load_tokenizer
    from ftg.training_data import build_dataset

    dataset, stats, _ = build_dataset(load_tokenizer(model), eval_file, max_length)
    for reason in stats.skipped:
        print(f"held-out: skipped {reason}")
    return [dataset[i] for i in range(min(limit, len(dataset)))]


def row_python(row: str, work: Path) -> Path | None:
    if row == "llamafactory":
        python = work / "venv-llamafactory" / "bin" / "python"
        return python if python.exists() else None
    return Path(sys.executable)


def machine_load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def run_row(row: str, repeat: int, python: Path, job: dict, work: Path) -> dict:
    job_file = work / f"job-{row}-{repeat}.json"
    job = {**job, "row": row, "run_dir": str(work / f"run-{row}-{repeat}")}
    job_file.write_text(json.dumps(job), encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "DISABLE_VERSION_CHECK": "1",
           "WANDB_DISABLED": "true", "HF_HUB_OFFLINE": "1"}
    log = work / f"job-{row}-{repeat}.log"
    load_before = machine_load()
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        completed = subprocess.run([str(python), str(Path(__file__).resolve()), "--worker", str(job_file)],
                                   stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=work)
    wall = time.perf_counter() - start
    result_file = job_file.with_suffix(".result.json")
    if completed.returncode != 0 or not result_file.exists():
        tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
        return {"row": row, "repeat": repeat, "error": f"exit {completed.returncode}", "log_tail": tail}
    result = json.loads(result_file.read_text(encoding="utf-8"))
    result.update(repeat=repeat, wall_s=wall, load_before=load_before, load_after=machine_load())
    return result


def best_of(results: list[dict], row: str) -> dict | None:
    """The row's repeat with the highest real tokens/s (the one least hit by the shared machine)."""
    done = [r for r in results if r["row"] == row and "error" not in r]
    return max(done, key=lambda r: r["real_tokens_per_s"]) if done else None


def table(results: list[dict]) -> str:
    gib = 1024**3
    lines = [f"{'row':<15} {'rep':>3} {'s/step':>8} {'real tok/s':>10} {'padding':>8} {'labelled/step':>13} "
             f"{'peak RSS GiB':>12} {'last loss':>9} {'held-out':>8} {'ckpt':>5} {'thr':>3}  load before -> after"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['row']:<15} {r['repeat']:>3} {r['error']}")
            continue
        lines.append(
            f"{r['row']:<15} {r['repeat']:>3} {r['median_step_s']:>8.2f} {r['real_tokens_per_s']:>10.1f} "
            f"{100 * r['padding_fraction']:>7.1f}% {r['labelled_tokens_per_step']:>13.0f} "
            f"{r['peak_rss_bytes'] / gib:>12.2f} {r['last_loss']:>9.3f} {r.get('heldout_loss', math.nan):>8.3f} {'on' if r['gradient_checkpointing'] else 'off':>5} "
            f"{r['torch_threads']:>3}  {r['load_before'].split(' on')[0][13:]} -> {r['load_after'].split(' on')[0][13:]}")
    return "\n".join(lines)


def ratios(results: list[dict]) -> tuple[str, dict]:
    ours = best_of(results, "ours")
    if ours is None:
        return "ours did not run: no ratios", {}
    lines, figures = [], {}
    for row in [r for r in ROWS + OPTIONAL_ROWS if r != "ours"]:
        peer = best_of(results, row)
        if peer is None:
            continue
        figures[row] = {"tokens_per_s": ours["real_tokens_per_s"] / peer["real_tokens_per_s"],
                        "peak_rss": ours["peak_rss_bytes"] / peer["peak_rss_bytes"],
                        "last_loss_diff": ours["last_loss"] - peer["last_loss"],
                        "heldout_loss_diff": ours.get("heldout_loss", math.nan) - peer.get("heldout_loss", math.nan)}
        f = figures[row]
        lines.append(f"ours vs {row:<15} real tokens/s x{f['tokens_per_s']:.2f}, peak RSS x{f['peak_rss']:.2f}, "
                     f"last loss {f['last_loss_diff']:+.3f}, held-out loss {f['heldout_loss_diff']:+.3f}")
    return "\n".join(lines), figures


HEAD_PASSES = {"ours": 4, "ours_recompute": 6, "trl_default": 6, "trl_best": 6, "llamafactory": 4}
"""FLOPs per projected position per lm_head weight: 2 forward + 2 input gradient (the head is frozen under LoRA).
ours computes the input gradient in its forward (ftg.chunked_loss, fused); ours_recompute and TRL 1.16's fused LM head
(trl/kernels/chunked_logprob.py, `ChunkedLogProbFunction.backward`) recompute every tile's logits in backward, a third
vocabulary-wide matmul. Profiled on the 270M (dev_log.txt, the 2026-12-03 entry): the head took 67 % of trl_best's step time,
47 % of ours; the bodies took the same seconds."""


def projects_labelled_only(row: str, device: str) -> bool:
    """Whether a row runs the lm_head only at positions with a label. ours always does (ftg.chunked_loss).
    TRL's fused head does so only where Triton runs (`_use_triton`: cuda, xpu); elsewhere, the CPU included, it
    scores every position so that tile shapes stay fixed (trl/trainer/utils.py, `compact`). LLaMA-Factory runs the
    model's own loss: logits for every fed position, padding included."""
    if row in ("ours", "ours_recompute"):
        return True
    return row.startswith("trl") and device in ("cuda", "xpu")


def shape_of(model_name: str | None, model_dir: str | None) -> dict:
    """Frozen linear weights of the body, LoRA weights (r=16) and lm_head weights, counted on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    sys.path.insert(0, str(ROOT / "scripts"))
    sys.path.insert(0, str(ROOT / "bench"))
    from ftg.device_plan import parameter_counts
    from train_throughput import REAL_MODELS, make_config

    config = make_config(REAL_MODELS[model_name]) if model_name else AutoConfig.from_pretrained(model_dir)
    text = config.get_text_config()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(text)
    body = sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head")
    return {"body": body, "lora": parameter_counts(config, 16)["lora"], "head": text.vocab_size * text.hidden_size}


def flops_per_real_token(result: dict, shape: dict, device: str) -> float:
    """Training FLOPs per real token of a row on `device`, from its measured padding, labelled share and
    checkpointing."""
    fed = 1 / (1 - result["padding_fraction"])  # fed tokens per real token
    real_per_step = result["real_tokens"] / max(1, result["steps"])
    labelled = result["labelled_tokens_per_step"] / real_per_step  # labelled positions per real token
    body = 4 * shape["body"] + 6 * shape["lora"] + (2 * shape["body"] if result["gradient_checkpointing"] else 0)
    projected = labelled if projects_labelled_only(result["row"], device) else fed
    return body * fed + HEAD_PASSES[result["row"]] * shape["head"] * projected


def predictions(results: list[dict], model_dir: str, targets: list[str]) -> tuple[str, dict]:
    """ours / each peer in FLOPs per real token: at the measured model on the CPU it ran on (to check against the
    measurement), and at each target's real shapes on the CPU and on a CUDA card (the GPU run), with the padding,
    labelled share and checkpointing each row had here. Not in the count: the head's element-wise work, which on the
    CPU costs TRL ~25 % more per matmul than ours (its tiles fold entropy and top-1 in torch)."""
    ours = best_of(results, "ours")
    if ours is None:
        return "", {}
    shapes = {"measured model": (shape_of(None, model_dir), "cpu")}
    for target in targets:
        shapes.update({f"{target} on {device}": (shape_of(target, None), device) for device in ("cpu", "cuda")})
    lines, figures = [], {}
    for row in [r for r in ROWS + OPTIONAL_ROWS if r != "ours"]:
        peer = best_of(results, row)
        if peer is None:
            continue
        measured = ours["real_tokens_per_s"] / peer["real_tokens_per_s"]
        predicted = {name: flops_per_real_token(peer, shape, device) / flops_per_real_token(ours, shape, device)
                     for name, (shape, device) in shapes.items()}
        figures[row] = {"measured": measured, **predicted}
        lines.append(f"ours vs {row:<15} measured x{measured:.2f}; predicted from FLOPs: "
                     + ", ".join(f"{name} x{value:.2f}" for name, value in predicted.items()))
    return "\n".join(lines), figures


def run(args) -> Path:
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.model or (tiny_model(work) if args.tiny else Path.home() / ".cache/finetune-gemma/gemma-3-270m")
    data = args.data or (tiny_data(work) if args.tiny else demo_data(work, model))
    job = {"model": str(model), "train_file": str(Path(data) / "train_dataset.jsonl"), "steps": args.steps,
           "warmup_steps_untimed": args.warmup, "micro_batch": args.micro_batch,
           "grad_accum": args.conversations_per_step // args.micro_batch, "max_length": args.max_length,
           "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "learning_rate": 2e-4, "warmup": 0.05, "seed": 42,
           "heldout": heldout_samples(model, Path(data) / "eval_dataset.jsonl", args.heldout, args.max_length)}
    rows = args.rows or list(ROWS)
    pythons, skipped = {}, []
    for row in rows:
        python = row_python(row, work)
        if python is None:
            skipped.append(f"{row}: skipped, no venv at {work / 'venv-llamafactory'} (see this script's docstring)")
        else:
            pythons[row] = python
    print(f"Model {model}\nData {job['train_file']}\n{job['micro_batch']} x {job['grad_accum']} = "
          f"{args.conversations_per_step} conversations per step, {args.steps} steps ({args.warmup} untimed), "
          f"LoRA r=16 alpha 32 on {','.join(LORA_TARGETS)}, lr 2e-4 cosine, float32, max length {args.max_length}")
    for line in skipped:
        print(line)
    report = {"tiny": args.tiny, "job": job, "skipped": skipped, "results": [], "machine_start": machine_load()}
    out_json = args.out / "peer_compare.json"
    for repeat in range(1, args.repeats + 1):
        for row in pythons:  # interleaved: A B C D A B C D
            print(f"  {row} (repeat {repeat}) ... {machine_load()}", flush=True)
            result = run_row(row, repeat, pythons[row], job, work)
            if "error" in result:
                print(f"    FAILED: {result['error']}\n{result['log_tail']}")
            else:
                print(f"    {result['real_tokens_per_s']:.1f} real tokens/s, {result['median_step_s']:.2f} s/step, "
                      f"loss {result['last_loss']:.3f}, held-out {result['heldout_loss']:.3f}", flush=True)
            report["results"].append(result)
            out_json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    report["machine_end"] = machine_load()
    return print_report(report, out_json, args.predict_for)


def print_report(report: dict, out_json: Path, targets: list[str]) -> Path:
    text, report["ratios"] = ratios(report["results"])
    predicted, report["predicted_ratios"] = predictions(report["results"], report["job"]["model"], targets)
    out_json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"\nmachine: {report['machine_start']} at the start, {report.get('machine_end', '(run stopped early)')} at the end "
          "(shared machines make these noisy)")
    print(table(report["results"]))
    print("\nratios (each row's best repeat):\n" + text)
    if predicted:
        print("\nratios predicted from training FLOPs per real token (each row's padding, labelled share and "
              "checkpointing as measured):\n" + predicted)
    if report["tiny"]:
        print("note: --tiny is a smoke test of the bench, not a performance figure")
    print(f"\nWrote {out_json}")
    return out_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help="a tiny random Gemma 3: a smoke test, not a benchmark")
    parser.add_argument("--model", type=Path, help="model folder (default: the 270M demo folder; --tiny: built)")
    parser.add_argument("--data", type=Path, help="folder with train_dataset.jsonl (default: the demo data)")
    parser.add_argument("--rows", nargs="+", choices=ROWS + OPTIONAL_ROWS, help=f"default: {' '.join(ROWS)}")
    parser.add_argument("--steps", type=int, help="optimizer steps per row (default 4; --tiny 3)")
    parser.add_argument("--warmup", type=int, default=1, help="steps left out of the timing (default 1)")
    parser.add_argument("--repeats", type=int, help="runs of each row, interleaved (default 2; --tiny 1)")
    parser.add_argument("--conversations-per-step", type=int, help="default 16 (finetune_gemma's); --tiny 4")
    parser.add_argument("--micro-batch", type=int, help="conversations per micro-batch, every row (default 4; --tiny 2)")
    parser.add_argument("--max-length", type=int, default=1024, help="tokens per conversation at most (default 1024)")
    parser.add_argument("--heldout", type=int, default=16,
                        help="held-out conversations (eval_dataset.jsonl) every row's trained model is scored on (default 16)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"venvs, data, runs (default {DEFAULT_WORK})")
    parser.add_argument("--out", type=Path, default=ROOT / "output" / "bench", help="folder for peer_compare.json")
    parser.add_argument("--predict-for", nargs="*", default=["gemma-3n-E2B"],
                        help="real shapes (bench/train_throughput.py) to predict the ratios for (default gemma-3n-E2B)")
    parser.add_argument("--report", type=Path, help="print the tables of a peer_compare.json again; run nothing")
    args = parser.parse_args(argv)
    if args.report:
        print_report(json.loads(args.report.read_text(encoding="utf-8")), args.report, args.predict_for)
        return 0
    if args.worker:
        worker(args.worker)
        return 0
    args.steps = args.steps or (3 if args.tiny else 4)
    args.repeats = args.repeats or (1 if args.tiny else 2)
    args.conversations_per_step = args.conversations_per_step or (4 if args.tiny else 16)
    args.micro_batch = args.micro_batch or (2 if args.tiny else 4)
    if args.conversations_per_step % args.micro_batch:
        parser.error("--conversations-per-step must be a multiple of --micro-batch")
    if args.warmup >= args.steps:
        parser.error("--warmup must be smaller than --steps")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
