"""Checking a GGUF file against the merged Hugging Face model it was made from.

Five checks, each run through the llama.cpp runtime (ftg.gguf_run) as LM Studio / Ollama / KoboldCpp load the file:
- load:      llama.cpp opens the file;
- tokenizer: llama.cpp splits a fixed English / Russian / emoji / code text set, and a chat rendered by Gemma's
             template, into exactly the token ids of the HF tokenizer;
- decode:    llama.cpp turns HF's token ids of DECODE_TEXTS and of the user's own replies back into exactly HF's text
             (a GGUF whose byte tokens are not typed BYTE prints "<0xF0><0x9F>..." for a rare emoji);
- logits:    on held-out eval conversations, the share of positions where both pick the same next token (top-1
             agreement) and the mean KL divergence KL(HF || GGUF) of the next-token distributions, in nats;
- reply:     one greedy reply through the chat template embedded in the GGUF: the prompt must equal HF's, the reply
             must carry no template tags (thinking tags included), and it must end at the template's end-of-turn
             token (<end_of_turn>, Gemma 4's <turn|>) wherever the HF model's reply does.

The HF side is computed once (`build_reference`) and then compared with every GGUF (`check_gguf`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ftg.chat_template import ChatFormat
from ftg.errors import UserError
from ftg.training_data import DataStats, iter_conversations

TOKENIZER_TEXTS = [
    "The quick brown fox jumps over the lazy dog. It's 3:45 p.m. — don't be late!",
    "Привет! Как дела? Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Ёлка, щётка и объём: «кавычки», тире — и многоточие…",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇷🇺 ❤️‍🔥 and a smiley :-)",
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\tprint(f\"{fib(10)=}\")",
    "  leading spaces,\n\nblank lines,   runs of    spaces\tand\ttabs  ",
    'JSON: {"key": [1, 2.5, null], "ключ": "значение"} <html><b>bold</b></html>',
    "Mixed: Hello мир 世界 مرحبا नमस्ते 12345678901234567890",
]
"""Fixed multilingual texts for the tokenizer check."""

DECODE_TEXTS = [
    "Rare emoji: 🦡 🫩 🥲 🩵 🗿 🪿 🧌",
    "ZWJ: 👩‍❤️‍💋‍👨 👨‍👩‍👧‍👦 🏳️‍🌈 🧑🏽‍💻 ❤️‍🔥 👍🏽",
    "Кириллица: Съешь же ещё этих мягких французских булок. Ёжик, щётка, «ёлка».",
    "CJK: 日本語のテキスト、中文字符和标点。한국어 문장도 조금.",
    "Accents: café naïve façade Ærøskøbing Łódź Şişli Žluťoučký kůň ångström",
    "Ligatures: ǅ ǈ ǋ ﬁ ﬂ ﬀ ﬃ ﬆ",
    "Spaces: a\u00a0b\u2009c\u202fd\u2007e\u3000f",
    "   three spaces,\n\n\nthree newlines,      six spaces \n \n",
    "\ttab\t\tdouble tab\t\t\tend\t",
    "Rare bytes: \x01\x02\x1b\x7f \u200b\u200d\ufeff \u0301 \U0001d11e \U0010fffd",
]
"""Texts whose HF token ids llama.cpp must decode back to HF's text: rare emoji fall back to byte tokens, and a
ligature or a non-breaking / thin space is a single piece HF prints as it is."""
DECODE_REPLIES = 4
"""How many assistant replies of the held-out conversations join DECODE_TEXTS (the user's own words)."""

FALLBACK_CONVERSATIONS = [
    [{"role": "user", "content": "Hi! How was your weekend?"},
     {"role": "assistant", "content": "Pretty good, thanks. I went hiking and then slept all Sunday."}],
    [{"role": "user", "content": "Привет! Что посоветуешь почитать?"},
     {"role": "assistant", "content": "Попробуй «Пикник на обочине» Стругацких — коротко и сильно."}],
    [{"role": "user", "content": "Can you write a Python function that reverses a string?"},
     {"role": "assistant", "content": "Sure: def reverse(s): return s[::-1]"}],
    [{"role": "user", "content": "What do you think about the new phone? 📱"},
     {"role": "assistant", "content": "Honestly, the camera is great, but the battery is a letdown 😅"}],
]
"""Used when data/eval_dataset.jsonl does not exist (e.g. convert_only on a model trained elsewhere)."""


def check_conversations(path: Path, count: int) -> tuple[list[list[dict]], str]:
    """The first `count` conversations of the held-out eval file, or the fallback set; and where they came from."""
    if not path.exists():
        return FALLBACK_CONVERSATIONS[:count], "built-in prompts (no eval file found)"
    stats = DataStats()
    conversations = list(itertools.islice(iter_conversations(path, stats), count))
    if stats.skipped:
        print(f"  Skipped {len(stats.skipped)} malformed lines of {path} for the logit check.")
    if not conversations:
        return FALLBACK_CONVERSATIONS[:count], f"built-in prompts ({path} has no usable conversations)"
    return conversations, str(path)


NEAR_TIE_NATS = 0.01
"""Where HF's two best next tokens are within 0.01 nats (a 1 % probability ratio), llama.cpp's f16 rounding may pick
either; such a position counts as agreeing for the threshold (the strict figure is reported too). Seen with the
llama.cpp b11739 runtime: 98.4 % strict on a 64-position check of the tuned 270M, one position off."""


@dataclass
class Reference:
    """What the merged HF model says, computed once and compared with every GGUF."""

    sequences: list[list[int]]
    """Token ids of each eval conversation, rendered by the chat template and cut to verify_tokens."""
    log_probs: list[np.ndarray]
    """log-softmax of the next-token logits at every position of each sequence, float32 [positions, vocab]."""
    text_tokens: list[list[int]]
    """HF token ids of TOKENIZER_TEXTS (no special tokens added)."""
    chat_text: str
    """A conversation rendered by the chat template, for the tokenizer check with special tokens."""
    chat_tokens: list[int]
    reply_messages: list[dict]
    reply_prompt: list[int]
    """HF's token ids of the reply prompt (chat template with the generation prompt)."""
    reply_tokens: list[int]
    """HF's greedy reply, without its stop token."""
    reply_stop: int | None
    """The stop token HF's reply ended with, or None when it ran out of tokens."""
    end_of_turn_id: int
    end_of_turn: str
    """The chat template's end-of-turn token (<end_of_turn>, Gemma 4's <turn|>)."""
    tags: tuple[str, ...]
    """Template tags (thinking and tool tags included) that must never appear in a reply."""
    source: str
    dtype: str
    hf_reply: str
    decoded: list[tuple[list[int], str]] = field(default_factory=list)
    """(HF token ids, HF's decoded text) of DECODE_TEXTS and the user's replies, for the decode check."""

    def summary(self) -> dict:
        """The reference's part of gguf_report.json."""
        return {"source": self.source, "dtype": self.dtype, "conversations": len(self.sequences),
                "positions": sum(len(s) for s in self.sequences), "hf_reply": self.hf_reply}


def reference_placement(n_params: int) -> tuple[str, object]:
    """Where and in what precision the HF reference runs: float32 (the most exact) on the GPU or else in RAM when it
    fits, bf16 only when neither has room (then near-ties may cost a little top-1 agreement)."""
    import psutil
    import torch

    # 4 bytes per weight plus 30% for the activations of a 64-token forward pass and the allocator.
    need = n_params * 4 * 1.3
    if torch.cuda.is_available() and need < torch.cuda.mem_get_info()[0]:
        return "cuda", torch.float32
    if need < psutil.virtual_memory().available:
        return "cpu", torch.float32
    print("  Not enough memory for a float32 reference; comparing with the model in bf16 (a little less exact).")
    return ("cuda" if torch.cuda.is_available() else "cpu"), torch.bfloat16


# long: one pass with the merged model loaded once: teacher-forced log-probs, then the greedy reference reply
def build_reference(merged: Path, tokenizer, conversations: list[list[dict]], source: str, verify_tokens: int,
                    reply_tokens: int, n_params: int) -> Reference:
    """tokenizer: the merged model's (ftg.models.load_tokenizer), loaded once by the caller: a Gemma tokenizer.json
    takes about 3 s to read on 2 cores, and convert needs it for the reference, the imatrix and the ladder."""
    import torch
    from tqdm import tqdm

    from ftg.models import load_causal_lm

    chat_format = ChatFormat.from_tokenizer(tokenizer)
    sequences, accepted = [], []
    for messages in conversations:
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception as exc:  # a conversation the template rejects (e.g. roles out of order) is skipped, said
            print(f"  Skipped an eval conversation the chat template rejects: {exc}")
            continue
        # The rendered text already starts with <bos>; adding special tokens again would double it.
        sequences.append(tokenizer(text, add_special_tokens=False)["input_ids"][:verify_tokens])
        accepted.append(messages)
    if not sequences:
        print("  No eval conversation fits the chat template; using the built-in prompts instead.")
        return build_reference(merged, tokenizer, FALLBACK_CONVERSATIONS, "built-in prompts", verify_tokens,
                               reply_tokens, n_params)
    device, dtype = reference_placement(n_params)
    model = load_causal_lm(merged, dtype=dtype).to(device).eval()
    log_probs = []
    with torch.no_grad():
        for ids in tqdm(sequences, desc="HF reference", unit="conversation"):
            logits = model(torch.tensor([ids], device=device)).logits[0].float()
            log_probs.append(torch.log_softmax(logits, dim=-1).cpu().numpy())

    first_user = next(m for m in accepted[0] if m["role"] == "user")
    reply_messages = [{"role": "user", "content": first_user["content"][:300]}]
    prompt_text = tokenizer.apply_chat_template(reply_messages, tokenize=False, add_generation_prompt=True)
    prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    end_of_turn = chat_format.end_of_turn_id(tokenizer)
    stops = sorted({end_of_turn, tokenizer.eos_token_id})
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt], device=device), max_new_tokens=reply_tokens, do_sample=False,
                             eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)[0, len(prompt):].tolist()
    stop = out[-1] if out and out[-1] in stops else None
    chat_text = tokenizer.apply_chat_template(FALLBACK_CONVERSATIONS[1], tokenize=False)
    reference = Reference(
        sequences=sequences,
        log_probs=log_probs,
        text_tokens=[tokenizer(t, add_special_tokens=False)["input_ids"] for t in TOKENIZER_TEXTS],
        chat_text=chat_text,
        chat_tokens=tokenizer(chat_text, add_special_tokens=False)["input_ids"],
        reply_messages=reply_messages,
        reply_prompt=prompt,
        reply_tokens=out[:-1] if stop is not None else out,
        reply_stop=stop,
        end_of_turn_id=end_of_turn,
        end_of_turn=chat_format.end_of_turn,
        tags=chat_format.tags,
        source=source,
        dtype=str(dtype).replace("torch.", ""),
        hf_reply=tokenizer.decode(out[:-1] if stop is not None else out),
    )
    reference.decoded = decode_reference(tokenizer, accepted)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return reference


def decode_reference(tokenizer, conversations: list[list[dict]]) -> list[tuple[list[int], str]]:
    """HF's token ids and decoded text of DECODE_TEXTS and of the first DECODE_REPLIES assistant replies."""
    replies = [m["content"] for messages in conversations for m in messages
               if m["role"] == "assistant" and isinstance(m.get("content"), str)][:DECODE_REPLIES]
    cases = []
    for text in DECODE_TEXTS + replies:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        cases.append((ids, tokenizer.decode(ids)))
    return cases


def check_decoding(model, decoded: list[tuple[list[int], str]]) -> dict:
    """The decode check: llama.cpp's text of each of HF's id lists (Reference.decoded) equals HF's text; the first
    difference is kept (repr of both sides) for the report."""
    mismatched, first = 0, None
    for ids, hf_text in decoded:
        gguf_text = model.detokenize(ids, special=True)
        if gguf_text != hf_text:
            mismatched += 1
            first = first or {"hf": repr(hf_text), "gguf": repr(gguf_text)}
    return {"texts": len(decoded), "mismatched_texts": mismatched, "first_mismatch": first,
            "ok": mismatched == 0}


def decoding_problems(result: dict) -> list[str]:
    """The decode check's failure in words (empty when it passed or did not run)."""
    decode = result.get("decode")
    if not decode or decode["ok"]:
        return []
    first = decode["first_mismatch"]
    return [f"decoded text differs from HF on {decode['mismatched_texts']} of {decode['texts']} texts; first: HF "
            f"{first['hf']}, GGUF {first['gguf']} (byte tokens not typed BYTE? the model folder needs "
            "tokenizer.model)"]


def next_token_agreement(gguf_logits, hf_log_probs) -> tuple[np.ndarray, np.ndarray, int, float]:
    """(GGUF log-probs, HF log-probs renormalised in float64 like the GGUF side, how many positions pick the same
    next token, the summed KL(HF || GGUF) in nats) for the same positions of both models."""
    from ftg.gguf_run import log_softmax

    gguf_log_probs, hf64 = log_softmax(gguf_logits), log_softmax(hf_log_probs)
    same = int((gguf_log_probs.argmax(-1) == hf64.argmax(-1)).sum())
    return gguf_log_probs, hf64, same, float((np.exp(hf64) * (hf64 - gguf_log_probs)).sum())


# long: the checks of the module docstring, in order; the GGUF is opened once for the logits, once for the reply
def check_gguf(path: Path, ref: Reference, reply_tokens: int) -> dict:
    """Run the checks on one GGUF; returns the figures (see the module docstring)."""
    from ftg.gguf_run import open_gguf, render_prompt
    from ftg.llama_runtime import open_model

    result = {"file": str(path), "size_bytes": path.stat().st_size}
    longest = max((len(s) for s in ref.sequences), default=1)
    try:
        model = open_model(path, n_ctx=longest, n_gpu_layers=-1)
    except UserError as exc:
        result.update(load=False, error=str(exc))
        return result
    result["load"] = True
    with model:
        mismatched = [text for text, expected in zip(TOKENIZER_TEXTS, ref.text_tokens)
                      if model.tokenize(text, special=False) != expected]
        chat_ok = model.tokenize(ref.chat_text) == ref.chat_tokens
        result["tokenizer"] = {"texts": len(TOKENIZER_TEXTS), "mismatched_texts": mismatched,
                               "chat_with_special_tokens": chat_ok, "ok": not mismatched and chat_ok}
        result["decode"] = check_decoding(model, ref.decoded)
        agree = agree_beyond_ties = positions = 0
        kl_sum = 0.0
        for ids, hf_log_probs in zip(ref.sequences, ref.log_probs):
            gguf_log_probs, hf64, same, kl = next_token_agreement(model.logits(ids), hf_log_probs)
            agree += same
            kl_sum += kl
            # A near tie is not a conversion error: the GGUF's choice is also HF's best within NEAR_TIE_NATS.
            hf_of_choice = np.take_along_axis(hf64, gguf_log_probs.argmax(-1)[:, None], axis=-1)[:, 0]
            agree_beyond_ties += int((hf_of_choice >= hf64.max(-1) - NEAR_TIE_NATS).sum())
            positions += len(ids)
    result["logits"] = {"positions": positions, "top1_agreement": agree / max(positions, 1),
                        "top1_agreement_beyond_near_ties": agree_beyond_ties / max(positions, 1),
                        "mean_kl": kl_sum / max(positions, 1)}

    reply = {"template_embedded": False, "ok": False}
    try:
        model = open_gguf(path, n_ctx=len(ref.reply_prompt) + reply_tokens, n_gpu_layers=-1)
    except UserError:  # no chat template embedded: the reply check fails
        result["reply"] = reply
        return result
    with model:
        reply = {"template_embedded": True, "end_of_turn": ref.end_of_turn,
                 "end_of_turn_is_stop_token": model.is_end_of_generation(ref.end_of_turn_id)}
        prompt = model.tokenize(render_prompt(model, ref.reply_messages))
        reply["prompt_matches_hf"] = prompt == ref.reply_prompt
        tokens = list(model.generate(prompt, reply_tokens))
        stop = model.stop_token
        text = model.detokenize(tokens)
    reply.update(
        text=text,
        tags_found=[tag for tag in ref.tags if tag in text],
        stopped_at_end_of_turn=stop == ref.end_of_turn_id,
        hf_stopped_at_end_of_turn=ref.reply_stop == ref.end_of_turn_id,
        same_tokens_as_hf=tokens == ref.reply_tokens and stop == ref.reply_stop,
    )
    # Ending where the trained model ends is the GGUF's job; a model that never learned to stop is not its fault.
    stops_like_hf = reply["stopped_at_end_of_turn"] or not reply["hf_stopped_at_end_of_turn"]
    reply["ok"] = (reply["prompt_matches_hf"] and not reply["tags_found"] and reply["end_of_turn_is_stop_token"]
                   and stops_like_hf)
    result["reply"] = reply
    return result


def problems(result: dict, min_top1: float) -> list[str]:
    """What failed, in words; empty when every check passes (min_top1 = 0 skips the agreement threshold)."""
    if not result.get("load"):
        return [result.get("error", "does not load")]
    found = []
    if not result["tokenizer"]["ok"]:
        found.append(f"tokenization differs from HF on {len(result['tokenizer']['mismatched_texts'])} texts"
                     + ("" if result["tokenizer"]["chat_with_special_tokens"] else " and on the chat template tokens"))
    found += decoding_problems(result)
    top1 = result["logits"]["top1_agreement_beyond_near_ties"]
    if top1 < min_top1:
        found.append(f"top-1 agreement {top1:.1%} < {min_top1:.0%}")
    reply = result["reply"]
    if not reply.get("template_embedded"):
        found.append("no chat template in the GGUF")
    else:
        if not reply["prompt_matches_hf"]:
            found.append("the embedded chat template renders a different prompt than HF")
        if reply["tags_found"]:
            found.append(f"the reply contains template tags {reply['tags_found']}")
        end = reply.get("end_of_turn", "the end-of-turn token")
        if not reply["end_of_turn_is_stop_token"]:
            found.append(f"{end} is not a stop token")
        if reply["hf_stopped_at_end_of_turn"] and not reply["stopped_at_end_of_turn"]:
            found.append(f"the reply does not stop at {end} where the HF model's does")
    return found
