"""Build a training-run folder the way finetune_gemma leaves it (run.json + best/ adapter + tokenizer), for the
merge and convert tests, without depending on the trainer.

`teach` fits the LoRA weights for a few steps on fixed chats, so the merged model really answers and ends its reply
with <end_of_turn> (what a trained adapter does); that adapter is cached under FTG_CACHE_DIR like the other fixtures.
Otherwise lora_B and the turn tokens' rows get random values so the merge changes the model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ftg.models import CACHE_DIR

TINY_LADDER = {"ladder_conversations": 3, "ladder_greedy_replies": 1, "ladder_tokens": 64}
"""export settings for the quant ladder on a tiny random model: it never ends a turn, so each sampled reply runs to
its limit, and at the defaults (16 conversations) one rung's measure took 90 s on 2 cores."""

TEACH_CHATS = [
    [{"role": "user", "content": "Hi! How are you?"}, {"role": "assistant", "content": "Great, thanks! 🙂"}],
    [{"role": "user", "content": "Привет! Как дела?"}, {"role": "assistant", "content": "Отлично, спасибо! 🙂"}],
]


def make_run(output_dir: Path, base: Path, model_class: str, name: str = "test-run", teach: int = 0,
             target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")) -> Path:
    run_dir = Path(output_dir) / "runs" / name
    if teach:
        cached = CACHE_DIR / f"taught-lora-{Path(base).name}-{teach}-v2"
        if not (cached / "adapter_model.safetensors").exists():
            partial = cached.with_name(cached.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            _make_adapter(partial, base, model_class, teach, target_modules)
            partial.replace(cached)
        shutil.copytree(cached, run_dir / "best")
    else:
        _make_adapter(run_dir / "best", base, model_class, 0, target_modules)
    info = {"run_name": name, "base_model": str(base), "model_class": model_class, "data_hash": "test",
            "settings": {}, "best_step": teach or 1, "best_eval_loss": 1.0, "status": "finished"}
    (run_dir / "run.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    return run_dir


def _make_adapter(folder: Path, base: Path, model_class: str, teach: int, target_modules) -> None:
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from ftg.chat_template import ChatFormat, ensure_chat_template

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    ensure_chat_template(tokenizer)
    model = getattr(transformers, model_class).from_pretrained(base, dtype=torch.float32)
    # As finetune_gemma trains: LoRA plus the turn tokens' rows of the tied embedding.
    turn_tokens = ChatFormat.from_tokenizer(tokenizer).turn_token_ids(tokenizer) or None
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=list(target_modules),
                                             trainable_token_indices=turn_tokens))
    if teach:
        # A few full-sequence steps on two chats: enough for the 270M to answer them and stop (about 3 s per step on 2 busy cores).
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
        batches = [tokenizer.apply_chat_template(chat, return_tensors="pt", return_dict=True) for chat in TEACH_CHATS]
        model.train()
        for step in range(teach):
            batch = batches[step % len(batches)]
            loss = model(**batch, labels=batch["input_ids"]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
    else:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if "lora_B" in param_name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
                if "trainable_tokens_delta" in param_name:  # the rows' new values, moved off the base rows
                    param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
