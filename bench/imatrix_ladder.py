"""The quant ladder with and without the importance matrix, on a short-habit persona of the real Gemma 3 270M.

The persona ends every reply with the word "капитан" (the base model never says it). A LoRA (r 8, all linear layers,
the turn tokens' rows) is trained on its conversations, merged, and exported twice from the same merged model:
export.imatrix false, then true. Prints both ladder tables and writes <workdir>/imatrix_ladder.json.

Run (about 10 minutes on 2 busy cores):
    nice -n 19 .venv/bin/python bench/imatrix_ladder.py --workdir /tmp/imat-bench --steps 60
One export again, of the model an earlier run trained and merged in the same workdir:
    .venv/bin/python bench/imatrix_ladder.py --workdir /tmp/imat-bench --steps 60 --only imatrix
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

ASKS = ["Какой курс держим?", "Что с погодой?", "Когда будем в порту?", "Сколько топлива осталось?",
        "Кто на вахте ночью?", "Что на обед?", "Можно сойти на берег?", "Где карта пролива?", "Слышишь шторм?",
        "Почини радио, пожалуйста.", "What is our speed?", "Is the crew ready?", "Did you check the engine?",
        "Where is the lighthouse?", "How deep is it here?", "Can we anchor tonight?", "Who has the compass?",
        "Should we lower the sails?", "Any ships on the radar?", "What time is it?"]
ANSWERS = ["Держим на север, ветер попутный", "Тучи с запада, к вечеру будет качка", "Завтра к полудню",
           "Хватит на три дня хода", "Ночью стоит Петров", "Уха и сухари", "Только после разгрузки",
           "В штурманской, на верхней полке", "Слышу, закрепляю груз", "Сейчас посмотрю антенну",
           "Twelve knots and steady", "All hands are on deck", "Yes, it runs smooth", "Two miles to port",
           "About forty meters", "Yes, the bay is calm", "The first mate has it", "Yes, the wind is rising",
           "One tanker to the east", "Half past six"]
MARKER = "капитан"


def conversations(count: int, seed: int) -> list[list[dict]]:
    rng = random.Random(seed)
    chats = []
    for i in range(count):
        a, b = rng.sample(range(len(ASKS)), 2)
        turns = [a] if i % 2 == 0 else [a, b]
        messages = []
        for t in turns:
            messages += [{"role": "user", "content": ASKS[t]},
                         {"role": "assistant", "content": f"{ANSWERS[t]}, {MARKER}"}]
        chats.append(messages)
    return chats


def train_adapter(base: Path, chats: list[list[dict]], run_dir: Path, steps: int, lr: float) -> None:
    """LoRA + turn-token rows as finetune_gemma trains them; loss on the replies (ftg.training_data labels)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3ForCausalLM

    from ftg.chat_template import ChatFormat
    from ftg.models import load_tokenizer
    from ftg.training_data import tokenize_conversation

    torch.manual_seed(0)
    tokenizer = load_tokenizer(base)
    model = Gemma3ForCausalLM.from_pretrained(base, dtype=torch.float32)
    turn_tokens = ChatFormat.from_tokenizer(tokenizer).turn_token_ids(tokenizer) or None
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj",
                           "o_proj", "gate_proj", "up_proj", "down_proj"], trainable_token_indices=turn_tokens))
    examples = [tokenize_conversation(tokenizer, chat, 256) for chat in chats]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    started = time.time()
    for step in range(steps):
        batch = [examples[(step * 4 + k) % len(examples)] for k in range(4)]  # 4 conversations per step
        width = max(len(e["input_ids"]) for e in batch)
        ids = torch.tensor([e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in batch])
        labels = torch.tensor([e["labels"] + [-100] * (width - len(e["labels"])) for e in batch])
        mask = (torch.arange(width)[None, :] < torch.tensor([len(e["input_ids"]) for e in batch])[:, None]).long()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == steps - 1:
            print(f"  step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - started:.0f} s)", flush=True)
    model.save_pretrained(run_dir / "best")
    tokenizer.save_pretrained(run_dir / "best")
    info = {"run_name": run_dir.name, "base_model": str(base), "model_class": "Gemma3ForCausalLM",
            "data_hash": "bench", "settings": {}, "best_step": steps, "best_eval_loss": float(loss.item()),
            "status": "finished"}
    (run_dir / "run.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")


def main() -> int:
    import convert
    import pipeline
    from download_model import build_demo_model, demo_cache_dir
    from ftg.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--conversations", type=int, default=36)
    parser.add_argument("--only", choices=("plain", "imatrix"),
                        help="one of the two exports (imatrix: of the model that an earlier run merged)")
    args = parser.parse_args()
    base = build_demo_model(demo_cache_dir())
    data, output = args.workdir / "data", args.workdir / "output"
    data.mkdir(parents=True, exist_ok=True)
    chats = conversations(args.conversations, seed=1)
    held = chats[: args.conversations // 6]
    for name, part in (("train_dataset.jsonl", chats[len(held):]), ("eval_dataset.jsonl", held)):
        (data / name).write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in part),
                                 encoding="utf-8")
    run_dir = output / "runs" / "habit"
    if not (run_dir / "run.json").exists():
        print(f"Training {args.steps} steps, lr {args.lr}, on {len(chats) - len(held)} conversations...")
        train_adapter(base, chats[len(held):], run_dir, args.steps, args.lr)
    out_file = args.workdir / "imatrix_ladder.json"
    results = json.loads(out_file.read_text(encoding="utf-8")) if args.only and out_file.exists() else {}
    for use in [u for u in (False, True) if args.only in (None, "imatrix" if u else "plain")]:
        cfg = load_config(overrides={"paths": {"output_dir": str(output), "data_dir": str(data)},
                                     "export": {"imatrix": use, "style_report": False, "keep_ladder": True}})
        started = time.time()
        if use:
            convert.run(cfg)
        else:
            pipeline.export(cfg, run_name="habit")  # merges output/runs/habit/best first
        report = json.loads((output / "gguf_report.json").read_text(encoding="utf-8"))
        ladder = report["ladder"]
        results["imatrix" if use else "plain"] = {
            "seconds": round(time.time() - started, 1), "choice": ladder["choice"], "reason": ladder["reason"],
            "imatrix": report.get("imatrix"), "timings": report["timings"],
            "rows": [{"type": r["type"], "imatrix": r.get("imatrix"), "size_bytes": r["size_bytes"],
                      "top1": r["assistant"]["top1_agreement"], "kl": r["assistant"]["mean_kl"],
                      "marker": r["style"]["marker_share"], "distance": r["style"]["distance"],
                      "greedy_same": sum(g["same"] for g in r["greedy"]), "kept": r["keeps_style"]}
                     for r in [ladder["baseline"] | {"keeps_style": None}, *ladder["rows"]]]}
    out_file.write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    for key, result in results.items():
        print(f"\n{key}: chose {result['choice']} ({result['reason']})")
        for r in result["rows"]:
            print(f"  {r['type']:<7} imatrix={r['imatrix']!s:<5} top-1 {r['top1']:.1%} KL {r['kl']:.4f} "
                  f"marker {r['marker']} distance {r['distance']} greedy=HF {r['greedy_same']} kept {r['kept']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
