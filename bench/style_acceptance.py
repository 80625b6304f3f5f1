"""Style acceptance: does fine-tuning make Gemma talk in the style of the data? Measured, not claimed.

Runs the whole pipeline on the real Gemma 3 270M on the CPU (prepare -> finetune -> merge -> convert Q4_K_M), then
generates greedy replies to held-out prompts in llama.cpp with the base GGUF and with the tuned Q4_K_M GGUF, and
counts the replies that carry a machine-checkable style marker. It also scores the held-out replies' perplexity
with both GGUFs.

Run:
    python bench/style_acceptance.py --dataset DIR --marker TEXT [--prompts FILE] [--me NAME]

DIR holds exports in any supported format. FILE holds held-out prompts, one per line; without it the prompts are the
eval split's last user turns. The last line printed is
    tuned_marker=NN% base_marker=NN% ppl_base=X ppl_tuned=Y
and the exit code is 0 only when the acceptance holds: tuned >= 80 %, base <= 5 %, perplexity down >= 30 %.

A dataset to try it on: `python bench/synthetic_exports.py /tmp/styled 400` writes one whose learned voice ends
every reply with "⚓" (use --marker ⚓ --me Sunny).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import pipeline  # noqa: E402  (the project's stage scripts live in scripts/)
import prepare_conversation_data  # noqa: E402
from download_model import build_demo_model  # noqa: E402
from ftg.config import load_config  # noqa: E402
from ftg.errors import UserError, run_main  # noqa: E402
from ftg.gguf_make import ensure_base_gguf  # noqa: E402
from ftg.gguf_run import generate_reply, open_gguf, reply_perplexity  # noqa: E402
from ftg.paths import DEMO_MODEL_DIR, EVAL_FILE  # noqa: E402
from ftg.training_data import reply_conversations  # noqa: E402

TUNED_MIN, BASE_MAX, PPL_DROP_MIN = 0.80, 0.05, 0.30
"""The acceptance: tuned replies carry the marker >= 80 %, base replies <= 5 %, held-out perplexity down >= 30 %."""


def read_prompts(prompts_file: Path | None, eval_file: Path) -> list[str]:
    """Held-out prompts: the file's non-empty lines, else the last user turn of each eval example."""
    if prompts_file:
        prompts = [line.strip() for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        prompts = [conversation[-2]["content"] for conversation in reply_conversations(eval_file, 10**6)]
    if not prompts:
        raise UserError(f"no prompts found in {prompts_file or eval_file}.")
    return prompts


def marker_share(gguf: Path, prompts: list[str], marker: str, chat_cfg, max_tokens: int, label: str) -> float:
    """Share of greedy single-turn replies that contain the marker."""
    hits = 0
    with open_gguf(gguf, chat_cfg.context_size, chat_cfg.n_gpu_layers) as model:
        for number, prompt in enumerate(prompts):
            reply = generate_reply(model, [{"role": "user", "content": prompt}], max_tokens, temperature=0.0)
            hits += marker in reply
            if number < 3:
                print(f"  [{label}] {prompt[:60]!r} -> {reply[:120]!r}")
    return hits / len(prompts)


def run(dataset: Path, marker: str, prompts_file: Path | None, me: list[str], workdir: Path, model: Path | None,
        steps: int, learning_rate: float, reply_tokens: int) -> dict:
    started = time.perf_counter()
    model_dir = model or build_demo_model(ROOT / "models" / DEMO_MODEL_DIR)
    cfg = load_config(overrides={
        "paths": {"data_dir": workdir / "data", "output_dir": workdir / "output"},
        "model": {"model": str(model_dir)},
        "data": {"input": str(dataset), "output": str(workdir / "data"), "me": me},
        "train": {"max_steps": steps, "learning_rate": learning_rate, "run_name": "style-acceptance", "resume": "new"},
        "export": {"quant": "Q4_K_M", "extra_quants": []},
        "chat": {"n_gpu_layers": 0},
    })
    prepare_conversation_data.run(cfg)
    tuned_gguf = pipeline.run(cfg)  # trains, merges, writes output/finetuned_gemma.gguf (Q4_K_M) with its checks
    base_gguf = ensure_base_gguf(cfg, model_dir)

    prompts = read_prompts(prompts_file, cfg.paths.data_dir / EVAL_FILE)
    print(f"\nGenerating greedy replies to {len(prompts)} held-out prompts (marker {marker!r})...")
    tuned = marker_share(tuned_gguf, prompts, marker, cfg.chat, reply_tokens, "tuned")
    base = marker_share(base_gguf, prompts, marker, cfg.chat, reply_tokens, "base")

    conversations = reply_conversations(cfg.paths.data_dir / EVAL_FILE, 10**6)
    ppl_base = reply_perplexity(base_gguf, conversations, n_gpu_layers=0, desc="perplexity base")["perplexity"]
    ppl_tuned = reply_perplexity(tuned_gguf, conversations, n_gpu_layers=0, desc="perplexity tuned")["perplexity"]
    return {"tuned_marker": tuned, "base_marker": base, "ppl_base": ppl_base, "ppl_tuned": ppl_tuned,
            "prompts": len(prompts), "eval_conversations": len(conversations),
            "seconds": time.perf_counter() - started}


def accepted(result: dict) -> bool:
    return (result["tuned_marker"] >= TUNED_MIN and result["base_marker"] <= BASE_MAX
            and result["ppl_tuned"] <= (1 - PPL_DROP_MIN) * result["ppl_base"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="folder with chat exports")
    parser.add_argument("--marker", required=True, help="text that every reply in the learned style carries")
    parser.add_argument("--prompts", type=Path, help="held-out prompts, one per line")
    parser.add_argument("--me", action="append", default=[], help="messenger exports: the learned voice's name/id")
    parser.add_argument("--workdir", type=Path, default=ROOT / "output" / "style_acceptance",
                        help="where this run's data/ and output/ go (default: output/style_acceptance)")
    parser.add_argument("--model", type=Path, help="base model folder (default: the offline Gemma 3 270M demo)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps of the CPU fine-tune")
    # 1e-3, as run_demo uses: the 270M's weights come from a Q4_K_M GGUF, and smaller LoRA changes are snapped back
    # onto that grid when the tuned model is quantized to Q4_K_M again (scripts/run_demo.py: DEMO_SETTINGS).
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate of the fine-tune")
    parser.add_argument("--reply-tokens", type=int, default=96, help="longest generated reply, in tokens")
    args = parser.parse_args(argv)

    def body() -> int:
        result = run(args.dataset.resolve(), args.marker, args.prompts, args.me, args.workdir.resolve(),
                     args.model, args.steps, args.learning_rate, args.reply_tokens)
        verdict = "ACCEPTED" if accepted(result) else "NOT ACCEPTED"
        print(f"\n{verdict}: {result['prompts']} prompts, {result['eval_conversations']} eval conversations, "
              f"{result['seconds'] / 60:.1f} min. Needs tuned >= {TUNED_MIN:.0%}, base <= {BASE_MAX:.0%}, "
              f"perplexity down >= {PPL_DROP_MIN:.0%}.")
        print(f"tuned_marker={result['tuned_marker']:.0%} base_marker={result['base_marker']:.0%} "
              f"ppl_base={result['ppl_base']:.2f} ppl_tuned={result['ppl_tuned']:.2f}")
        return 0 if accepted(result) else 1

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
