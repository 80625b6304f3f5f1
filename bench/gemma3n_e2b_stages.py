"""Gemma-3n at the real E2B layout through the real stages, as a user runs them: does its f16 GGUF agree?

tests/test_gemma3n_export.py converts a Gemma3nForCausalLM at llama.cpp's layout directly and reaches 100 % top-1
agreement; tests/test_families.py runs a tiny Gemma-3n through the stages, where the check fails as designed (its
layout is not llama.cpp's). This runs the two together, too heavy for CI:

1. build      a random Gemma3nForConditionalGeneration in google/gemma-3n-E2B-it's Hub layout (tests/hub_layouts.py:
              model.language_model.*, audio tower, embedders, vision tower tensors, processor files) whose text model
              is the faithful layout (hub_layouts.faithful_gemma3n_config: 22 layers, 2 KV-shared, per-layer width
              256, laurel 64, FFN 8192, sparsity on the first 10 layers) with the FULL 262144-row per-layer table
              (1.48 B weights), conditioned as the parity test is (hub_layouts.condition_gemma3n), saved in bf16 as
              Google's files are: 3.0 GB;
2. download_model --local, 3. prepare_dataset on dataset/sample/chatgpt, 4. finetune_gemma (--max-steps steps,
   --no-auto-export), 5. merge_lora, 6. convert_only (F16 + Q4_K_M with the GGUF checks; the K-quant keeps
   per_layer_token_embd at Q8_0; no style report), 7. chat with one scripted message.

Each stage is its own child process, so its figures are its own: wall time and peak RSS (ru_maxrss from wait4: the
largest single process of the stage, the converter's child included, not their sum). The F16 check's figures come
from <work>/output/gguf_report.json. The base model is built once under FTG_CACHE_DIR and deleted at the end with the
work folder (6+ GB of files) unless --keep.

Measured 2026-12-02 (2 cores shared with two other heavy jobs, 3 steps, run with chat's default 512-token reply):
  stage            seconds  peak RSS
  build                 66   8.7 GiB   (the float32 model while it is cast to bf16)
  download --local       0   0.2 GiB
  prepare_dataset       15   0.7 GiB
  finetune_gemma       313   9.0 GiB   (eval loss 12.45 = ln 262144: a random model's near-uniform next token)
  merge_lora            68   3.7 GiB   -> Gemma3nForCausalLM, bf16, 6 K/V tensors of the shared layers as zeros
  convert_only         913   9.7 GiB   (converter 81 s, float32 reference 141 s, F16 check 183 s, Q4_K_M 43 + 96 s)
  chat                 487   1.7 GiB   (512 tokens of a random model that never stops; now --max-tokens 32)
  F16 (gemma3n, 2.9 GiB):    top-1 99.77 % strict, 100 % beyond near ties, over 427 positions; mean KL 1.9e-9
                             nats; same greedy reply tokens as HF; passed.
  Q4_K_M (1.5 GiB, per_layer_token_embd Q8_0): 91.6 % strict, 97.4 % beyond near ties; KL 2.2e-5; same reply.
The KL is tiny because a random model's next-token distribution is nearly flat; for the same reason top-1 is decided
by small logit gaps, so 99.8 % is a tight test of f16 rounding, and Q4_K_M's 91.6 % says little about a trained model.

Run:
    python bench/gemma3n_e2b_stages.py                        work folder /tmp/gemma3n-e2b-stages, 3 training steps
    python bench/gemma3n_e2b_stages.py --work /tmp/x --steps 5 --keep
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]  # the project's ftg and the tests' hub_layouts
BASE_NAME = "hub-gemma3n-e2b-layout"
"""The base model's cache folder under FTG_CACHE_DIR (hub_layouts adds its layout version)."""
CHAT_MESSAGE = "Hi! How was your weekend?"


def build_base() -> Path:
    """The Hub-layout Gemma-3n at the faithful layout (built once; the demo folder gives the real tokenizer)."""
    import torch
    from hub_layouts import condition_gemma3n, faithful_gemma3n_config, gemma3n_multimodal

    from download_model import build_demo_model, demo_cache_dir

    tokenizer_dir = build_demo_model(demo_cache_dir())
    return gemma3n_multimodal(tokenizer_dir, faithful_gemma3n_config(), name=BASE_NAME, dtype=torch.bfloat16,
                              condition=condition_gemma3n)


def run_stage(name: str, command: list[str], log: Path, stdin: str | None = None) -> dict:
    """Run one stage as a child process with its output in `log` (and echoed); its wall time, peak RSS, exit code."""
    print(f"\n=== {name}: {' '.join(command)}", flush=True)
    started = time.time()
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, text=True)
        if stdin is not None:
            process.stdin.write(stdin)
            process.stdin.close()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    row = {"stage": name, "seconds": round(time.time() - started, 1), "peak_rss_gib": usage.ru_maxrss / 2**20,
           "rc": process.returncode, "log": str(log)}  # ru_maxrss is KiB on Linux
    tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
    print(tail, flush=True)
    print(f"--- {name}: rc {row['rc']}, {row['seconds']:.0f} s, peak RSS {row['peak_rss_gib']:.2f} GiB", flush=True)
    return row


def check_figures(report_path: Path) -> list[dict]:
    """Each GGUF's check figures from gguf_report.json, flattened for printing."""
    if not report_path.exists():
        return []
    report = json.loads(report_path.read_text(encoding="utf-8"))
    rows = []
    for row in report["files"]:
        logits, reply = row.get("logits", {}), row.get("reply", {})
        rows.append({"type": row.get("type"), "load": row.get("load"), "size_gib": row.get("size_bytes", 0) / 2**30,
                     "top1_strict": logits.get("top1_agreement"),
                     "top1_beyond_near_ties": logits.get("top1_agreement_beyond_near_ties"),
                     "mean_kl": logits.get("mean_kl"), "positions": logits.get("positions"),
                     "tokenizer_ok": row.get("tokenizer", {}).get("ok"), "reply_ok": reply.get("ok"),
                     "reply_same_tokens_as_hf": reply.get("same_tokens_as_hf"), "reply": reply.get("text"),
                     "per_layer_token_embd": row.get("per_layer_token_embd"), "tensor_types": row.get("tensor_types"),
                     "problems": row.get("problems")})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gemma3n-e2b-stages"),
                        help="project folder for models/, data/, output/ (emptied first)")
    parser.add_argument("--steps", type=int, default=3, help="training steps (micro-batch 2 x 128 tokens each)")
    parser.add_argument("--keep", action="store_true", help="keep the base model and the work folder (6+ GB)")
    parser.add_argument("--build-base", action="store_true", help=argparse.SUPPRESS)  # the build stage's child
    args = parser.parse_args(argv)
    if args.build_base:
        print(f"Base model: {build_base()}")
        return 0

    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    for sub in ("models", "data", "output", "logs"):
        (work / sub).mkdir(parents=True)
    from hub_layouts import LAYOUT_VERSION

    from ftg.models import CACHE_DIR

    base = CACHE_DIR / f"{BASE_NAME}-v{LAYOUT_VERSION}"
    python = sys.executable
    paths = ["--models-dir", str(work / "models"), "--data-dir", str(work / "data"), "--output-dir", str(work / "output")]
    stages = [
        ("build", [python, __file__, "--build-base"], None),
        ("download_model --local", [python, "scripts/download_model.py", "--local", str(base), *paths], None),
        ("prepare_dataset", [python, "scripts/prepare_conversation_data.py", "--input",
                             str(ROOT / "dataset" / "sample" / "chatgpt"), *paths], None),
        ("finetune_gemma", [python, "scripts/finetune_gemma.py", *paths, "--micro-batch", "2", "--grad-accum", "1",
                            "--max-seq-len", "128", "--max-steps", str(args.steps), "--eval-every", str(args.steps),
                            "--sample-prompts", "1", "--no-auto-export"], None),
        ("merge_lora", [python, "scripts/merge_lora.py", *paths], None),
        ("convert_only", [python, "scripts/convert.py", "--skip-merge", "--quant", "Q4_K_M", "--no-style-report",
                          *paths], None),
        # 32 tokens: a random model never says <end_of_turn>, and 512 took 8 minutes on 2 busy cores
        ("chat", [python, "scripts/chat.py", *paths, "--max-tokens", "32"], CHAT_MESSAGE + "\n/exit\n"),
    ]
    rows = []
    for name, command, stdin in stages:
        rows.append(run_stage(name, command, work / "logs" / f"{len(rows) + 1}_{name.split()[0]}.log", stdin))
        if rows[-1]["rc"] != 0 and name != "convert_only":  # a failed check still leaves its report; chat says why
            break

    merged_config = work / "output" / "merged" / "config.json"
    merged_arch = json.loads(merged_config.read_text())["architectures"] if merged_config.exists() else None
    figures = check_figures(work / "output" / "gguf_report.json")
    print("\nstage                    seconds  peak RSS GiB  result")
    for row in rows:
        print(f"{row['stage']:<24} {row['seconds']:>7.0f}  {row['peak_rss_gib']:>12.2f}  "
              f"{'ok' if row['rc'] == 0 else 'FAILED (rc %d)' % row['rc']}")
    print(f"\nmerged architectures: {merged_arch}")
    for row in figures:
        print(json.dumps(row, ensure_ascii=False, indent=1))
    summary = {"stages": rows, "merged_architectures": merged_arch, "checks": figures, "base": str(base)}
    (work / "bench_summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"\nSummary: {work / 'bench_summary.json'}")
    if not args.keep:
        shutil.copy(work / "bench_summary.json", Path("/tmp") / f"{work.name}_summary.json")
        for log in (work / "logs").iterdir():  # the logs are small and say what happened; the models are not
            shutil.copy(log, Path("/tmp") / f"{work.name}_{log.name}")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
        print(f"Deleted {work} and {base} (--keep keeps them); the summary and logs are in /tmp/{work.name}_*")
    return 0 if rows and all(row["rc"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
