"""Where a training step of ours spends its time: torch.profiler over finetune_gemma's own path (issue 17).

Loads the model the way finetune_gemma does (plan_device + load_model_for_training + build_trainer), takes the
demo data (or --data), and times:
  - --steps optimizer steps under torch.profiler (after one untimed step); prints the top operators by self CPU
    time and the share of the vocabulary-wide work (the lm_head matmuls and the loss) against the rest;
  - one evaluation pass (trainer.evaluate on --eval-conversations) and one round of sample replies (what
    finetune_gemma does every train.eval_every steps), in seconds;
  - one optimizer step at 1 and at the default number of torch threads.
Numbers go to stdout and <out>/profile_step.json.

Run:
    python bench/profile_step.py                                        the real Gemma 3 270M, demo data
    python bench/profile_step.py --model ~/.cache/finetune-gemma/tiny-gemma3n-v2 --label tiny-gemma3n
    python bench/profile_step.py --fused off                            the chunked loss's recompute path
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from transformers import AutoConfig, set_seed  # noqa: E402

from finetune_gemma import SampleReplies, build_trainer  # noqa: E402
from ftg.chunked_loss import enable_chunked_loss  # noqa: E402
from ftg.config import TrainConfig  # noqa: E402
from ftg.device_plan import detect_device, plan_device  # noqa: E402
from download_model import demo_cache_dir  # noqa: E402
from ftg.models import load_model_for_training  # noqa: E402
from ftg.training_data import build_dataset, prompt_and_reference  # noqa: E402

VOCAB_OPS = ("aten::mm", "aten::addmm", "aten::matmul", "aten::linear")


def one_step(trainer, batches):
    """One optimizer step by hand: forward + backward per micro-batch, then the optimizer (Trainer's own pieces)."""
    model = trainer.model
    start = time.perf_counter()
    for batch in batches:
        loss = trainer.training_step(model, batch, num_items_in_batch=sum(int((b["labels"] != -100).sum())
                                                                          for b in batches))
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    return time.perf_counter() - start, float(loss)


def run(args) -> Path:
    set_seed(42)
    cfg = TrainConfig(max_steps=10, eval_every=10**6)
    device, name, memory, bf16 = detect_device()
    plan = plan_device(AutoConfig.from_pretrained(args.model), memory, cfg, device, name, bf16)
    plan = dataclasses.replace(plan, micro_batch=args.micro_batch, grad_accum=args.grad_accum)
    model, tokenizer = load_model_for_training(args.model, plan, cfg)
    if args.fused == "off":
        enable_chunked_loss(model, plan.loss_chunk_tokens, fused=False)
    train_file = args.data / "train_dataset.jsonl"
    train_ds, _, _ = build_dataset(tokenizer, train_file, plan.max_seq_len)
    eval_ds, _, eval_conversations = build_dataset(tokenizer, args.data / "eval_dataset.jsonl", plan.max_seq_len)
    eval_ds = eval_ds.select(range(min(args.eval_conversations, len(eval_ds))))
    trainer = build_trainer(model, tokenizer, train_ds, eval_ds, plan, cfg, args.out / "trainer")
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    collate = trainer.data_collator
    per_step = plan.micro_batch * plan.grad_accum
    steps = [[collate([train_ds[i] for i in range(s * per_step + m * plan.micro_batch,
                                                  s * per_step + (m + 1) * plan.micro_batch)])
              for m in range(plan.grad_accum)] for s in range(args.steps + 3)]
    tokens = [sum(b["input_ids"].numel() for b in step) for step in steps]
    labelled = [sum(int((b["labels"] != -100).sum()) for b in step) for step in steps]
    model.train()
    report = {"label": args.label, "model": str(args.model), "fused": args.fused, "threads": torch.get_num_threads(),
              "micro_batch": plan.micro_batch, "grad_accum": plan.grad_accum,
              "tokens_per_step": tokens[: args.steps + 1], "labelled_per_step": labelled[: args.steps + 1]}
    one_step(trainer, steps[0])  # untimed: allocator growth, first-call overheads
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        seconds = [one_step(trainer, steps[1 + s])[0] for s in range(args.steps)]
    report["step_seconds"] = seconds
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    vocab = str(AutoConfig.from_pretrained(args.model).get_text_config().vocab_size)
    # Matmuls with the vocabulary in a shape: the lm_head forward and its input gradient (and the recompute).
    vocab_mm = sum(e.self_cpu_time_total for e in events if e.key in VOCAB_OPS and vocab in str(e.input_shapes))
    report["self_cpu_share"] = {"vocab_matmuls": vocab_mm / total}
    top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top)
    report["top_operators"] = top
    print(top)
    by_shape = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    report["top_by_shape"] = [(e.key, str(e.input_shapes)[:120], e.self_cpu_time_total / total) for e in by_shape]
    for key, shape, share in report["top_by_shape"]:
        print(f"{100 * share:5.1f}%  {key:<28} {shape}")
    print(f"vocabulary-wide matmuls: {100 * vocab_mm / total:.1f} % of self CPU time; steps {seconds}")
    # Evaluation and sample replies, as finetune_gemma runs them at every eval_every.
    start = time.perf_counter()
    trainer.evaluate()
    report["evaluate_s"] = time.perf_counter() - start
    samples = [prompt_and_reference(m) for m in eval_conversations[: args.sample_prompts]]

    class NullWriter:
        def add_text(self, *a):
            pass

    start = time.perf_counter()
    SampleReplies(NullWriter(), tokenizer, samples).replies(model)
    report["sample_replies_s"] = time.perf_counter() - start
    model.train()
    threads = torch.get_num_threads()
    report["step_s_by_threads"] = {}
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        report["step_s_by_threads"][n] = one_step(trainer, steps[args.steps + 1 + (n != 1)])[0]
    torch.set_num_threads(threads)
    print(f"evaluate ({len(eval_ds)} conversations): {report['evaluate_s']:.1f} s; sample replies "
          f"({len(samples)} x 48 tokens): {report['sample_replies_s']:.1f} s; step by threads "
          f"{report['step_s_by_threads']}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"profile_step-{args.label}-{args.fused}.json"
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"Wrote {out}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=demo_cache_dir())
    parser.add_argument("--label", default="gemma-3-270m")
    parser.add_argument("--data", type=Path, default=Path("/tmp/peer_compare/data"),
                        help="a prepare_conversation_data output folder (train + eval jsonl)")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1, help="profiled optimizer steps")
    parser.add_argument("--eval-conversations", type=int, default=11)
    parser.add_argument("--sample-prompts", type=int, default=3)
    parser.add_argument("--fused", choices=("on", "off"), default="on")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "output" / "bench")
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
