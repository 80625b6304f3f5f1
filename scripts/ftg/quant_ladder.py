"""Which quant keeps your style? The quant ladder: measure each quant against the F16 file and the merged model on
your own conversations, then take the smallest that keeps the style.

Why: top-1 agreement over all positions of a conversation mostly scores the prompt's tokens, which training never
changed. On a short-habit persona of the real Gemma 3 270M the Q4_K_M file agreed with the merged model on 69.5 %
of all positions, looked fine, and carried the habit in 1 reply of 25 (the F16 file: 25 of 25).

What is measured, for the F16 file (the baseline) and each quant (see `measure`):
- assistant tokens: the reply tokens training learned, found with the chat template (`assistant_rows`); on them,
  the share where the GGUF's next token is the merged model's (top-1) and the mean KL(HF || GGUF), in nats;
- style: replies sampled as chat samples them (chat.temperature, reply i with seed i) to the probe conversations'
  prompts; their ftg style distance to your replies (0 = the same, 1 = unrelated), the share that would pass as
  yours, and the share that carry your marker when you have one (a last or first word in >= 80 % of your replies,
  or export.style_marker);
- greedy replies beside the merged model's greedy replies: the same text, or the character where they first differ.
The rule (`keeps_style`) and the choice (`choose`) are pure functions of these rows.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ftg.gguf_make import QUANTS
from ftg.paths import EVAL_FILE, TRAIN_FILE

MARKER_MIN_SHARE = 0.8
"""A word or emoji counts as your marker when it ends (or starts) at least 80 % of your replies."""
TRAIN_REPLIES = 200
"""Training replies (the first ones) that the style classifier learns you from and the marker is found in."""
MAX_ROWS = 256
"""Assistant-token positions kept from the merged model: each holds the vocabulary's log-probs (1 MB for Gemma)."""


def ladder_order(quants: list[str]) -> list[str]:
    """The ladder's quant types, smallest first (bits per weight, ftg.gguf_make.QUANTS)."""
    return sorted(dict.fromkeys(quants), key=lambda name: QUANTS[name].bits_per_weight)


def find_marker(replies: list[str]) -> str | None:
    """Your marker: the last (else the first) word or emoji of at least MARKER_MIN_SHARE of your replies."""
    from ftg.style_fingerprint import opener_closer

    if not replies:
        return None
    for side in (1, 0):
        word, count = Counter(opener_closer(reply)[side] for reply in replies).most_common(1)[0]
        if word and count >= MARKER_MIN_SHARE * len(replies):
            return word
    return None


def marker_share(replies: list[str], marker: str) -> float:
    """Share of replies that carry the marker (case-insensitive)."""
    return sum(marker.lower() in reply.lower() for reply in replies) / max(len(replies), 1)


@dataclass
class Probe:
    """What the merged model and your data say, computed once, compared with the F16 file and every quant."""

    conversations: list[list[dict]]
    """Each ends with your reply; the held-out eval conversations first, topped up from the training ones."""
    held_out: int
    """How many of `conversations` are held out (the rest were trained on: the ladder compares files, not models)."""
    sequences: list[list[int]]
    """Token ids of each conversation, rendered by the chat template."""
    rows: list[np.ndarray]
    """Per sequence: the positions whose next token is an assistant token (the reply and its end-of-turn)."""
    hf_log_probs: list[np.ndarray]
    """The merged model's log-softmax at those positions, float32 [rows, vocab]."""
    hf_greedy: list[str]
    """The merged model's greedy replies to the first conversations' prompts."""
    person: list[str]
    person_train: list[str]
    others_train: list[str]
    marker: str | None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"conversations": len(self.conversations), "held_out": self.held_out,
                "assistant_positions": int(sum(len(r) for r in self.rows)), "marker": self.marker,
                "greedy_replies": len(self.hf_greedy), "seconds": round(self.seconds, 1)}


def probe_conversations(data_dir: Path, count: int) -> tuple[list[list[dict]], list[list[dict]], int]:
    """(up to `count` conversations ending with your reply: the eval file's first, topped up from the training file;
    up to TRAIN_REPLIES training conversations for the style classifier and the marker; how many are held out).
    The training file is read once and only as far as needed: the top-up is taken from after the classifier's
    conversations when the file is long enough, else from its last ones."""
    from ftg.errors import UserError
    from ftg.training_data import reply_conversations

    def read(path: Path, limit: int) -> list[list[dict]]:
        try:
            return reply_conversations(path, limit) if path.exists() else []
        except UserError:  # no usable conversation: the ladder measures what there is
            return []

    held = read(data_dir / EVAL_FILE, count)
    need = count - len(held)
    trained = read(data_dir / TRAIN_FILE, TRAIN_REPLIES + need)
    top_up = trained[-need:] if need > 0 else []
    return held + top_up, trained[:TRAIN_REPLIES], len(held)


def assistant_rows(tokenizer, messages: list[dict], length: int) -> tuple[list[int], np.ndarray]:
    """(token ids cut to `length`, the rows whose next token belongs to an assistant reply). Row j of the logits
    predicts token j + 1; a reply's tokens run from the end of the prompt that asks for it (the template's generation
    prompt) through its end-of-turn token, found by rendering the conversation up to each reply."""
    def ids(part, add):
        text = tokenizer.apply_chat_template(part, tokenize=False, add_generation_prompt=add)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    full = ids(messages, False)[:length]
    rows = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start, end = len(ids(messages[:i], True)), len(ids(messages[: i + 1], False))
        # The rendered turn ends "<end_of_turn>\n": the newline after it is never generated, so never scored.
        rows.extend(range(start - 1, min(end - 2, len(full) - 1)))
    return full, np.array([r for r in rows if 0 <= r < len(full) - 1], dtype=np.int64)


# long: one pass with the merged model loaded once: the assistant-token log-probs, then its greedy replies
def build_probe(merged: Path, tokenizer, data_dir: Path, export, chat_cfg) -> Probe:
    import torch

    from ftg.gguf_check import reference_placement
    from ftg.gguf_make import count_parameters
    from ftg.models import load_causal_lm

    started = time.time()
    conversations, train, held = probe_conversations(data_dir, export.ladder_conversations)
    usable, sequences, rows = [], [], []
    for messages in conversations:
        try:
            ids, found = assistant_rows(tokenizer, messages, export.ladder_tokens)
        except Exception as exc:  # a conversation the template rejects is skipped, said
            print(f"  Skipped a conversation the chat template rejects: {exc}")
            continue
        usable.append(messages)
        sequences.append(ids)
        rows.append(found)
    budget, kept = MAX_ROWS, []
    for found in rows:  # at most MAX_ROWS positions in all, the first conversations first
        kept.append(found[:budget])
        budget -= len(kept[-1])
    device, dtype = reference_placement(count_parameters(merged))
    model = load_causal_lm(merged, dtype=dtype).to(device).eval()
    log_probs, greedy = [], []
    with torch.no_grad():
        for ids, found in zip(sequences, kept):
            if len(found):
                logits = model(torch.tensor([ids], device=device)).logits[0, torch.tensor(found)].float()
                log_probs.append(torch.log_softmax(logits, dim=-1).cpu().numpy())
            else:
                log_probs.append(np.zeros((0, 1), dtype=np.float32))
        stops = sorted({tokenizer.convert_tokens_to_ids(t) for t in ("<end_of_turn>", "<turn|>")
                        if t in tokenizer.get_vocab()} | {tokenizer.eos_token_id})
        for messages in usable[: export.ladder_greedy_replies]:
            text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
            prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
            out = model.generate(torch.tensor([prompt], device=device), max_new_tokens=export.reply_tokens,
                                 do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
            reply = [t for t in out[0, len(prompt):].tolist() if t not in stops]
            greedy.append(tokenizer.decode(reply).strip())
    del model
    person = [m[-1]["content"] for m in usable]
    person_train = [m[-1]["content"] for m in train]
    marker = export.style_marker.strip() or find_marker(person_train or person)
    return Probe(usable, min(held, len(usable)), sequences, kept, log_probs, greedy, person, person_train,
                 [m[-2]["content"] for m in train], marker or None, time.time() - started)


def first_difference(a: str, b: str) -> int | None:
    """The index of the first character where two texts differ; None when they are the same."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


# long: the measurements of the module docstring, in order, with the GGUF opened once
def measure(path: Path, gguf_type: str, probe: Probe, chat_cfg, export) -> dict:
    """One row of the ladder: assistant-token agreement, style of sampled replies, greedy replies vs the merged."""
    from ftg.gguf_check import next_token_agreement
    from ftg.gguf_run import fit_to_context, generate_reply, open_gguf
    from ftg.style_classifier import pass_as_yours
    from ftg.style_fingerprint import distance, fingerprint, words_in

    started = time.time()
    agree = positions = 0
    kl_sum = 0.0
    sampled, greedy = [], []
    with open_gguf(path, n_ctx=chat_cfg.context_size, n_gpu_layers=chat_cfg.n_gpu_layers) as model:
        for ids, rows, hf in zip(probe.sequences, probe.rows, probe.hf_log_probs):
            if not len(rows):
                continue
            _, _, same, kl = next_token_agreement(model.logits(ids)[rows], hf)
            agree += same
            kl_sum += kl
            positions += len(rows)
        reserve = min(chat_cfg.report_reply_tokens, model.n_ctx // 2)
        for number, messages in enumerate(probe.conversations):
            prompt = fit_to_context(model, messages[:-1], reserve)
            sampled.append(generate_reply(model, prompt, chat_cfg.report_reply_tokens, chat_cfg.temperature,
                                          seed=number).strip())
            if number < len(probe.hf_greedy):
                greedy.append(generate_reply(model, prompt, export.reply_tokens).strip())
    style = {"distance": round(distance(fingerprint(probe.person), fingerprint(sampled))["overall"], 4),
             "words_mean": round(float(np.mean([len(words_in(r)) for r in sampled])), 1),
             "person_words_mean": round(float(np.mean([len(words_in(r)) for r in probe.person])), 1),
             "marker_share": marker_share(sampled, probe.marker) if probe.marker else None, "pass_as_yours": None}
    if len(probe.person_train) >= 8:
        # Your training replies against the other speakers' lines they answer: no base model needs to run here.
        style["pass_as_yours"] = pass_as_yours(probe.person_train, [], {"replies": sampled},
                                               probe.others_train)["replies"]
    return {"type": gguf_type, "file": str(path), "size_bytes": path.stat().st_size,
            "assistant": {"positions": positions, "top1_agreement": agree / max(positions, 1),
                          "mean_kl": kl_sum / max(positions, 1)},
            "style": style, "replies": sampled,
            "greedy": [{"same": g == h, "first_difference": first_difference(g, h), "text": g}
                       for g, h in zip(greedy, probe.hf_greedy)],
            "measure_s": round(time.time() - started, 1)}


def keeps_style(row: dict, baseline: dict, rule: dict) -> tuple[bool, str]:
    """(whether `row` keeps the style of `baseline` (the F16 row) under `rule`, why in words).

    rule: {"style_tolerance": distance units, "min_assistant_top1": share, "marker_tolerance": share}."""
    losses = []
    marker, base_marker = row["style"].get("marker_share"), baseline["style"].get("marker_share")
    if marker is not None and base_marker is not None and marker < base_marker - rule["marker_tolerance"]:
        losses.append(f"marker {marker:.0%} vs {base_marker:.0%} at {baseline['type']}")
    dist, base_dist = row["style"]["distance"], baseline["style"]["distance"]
    if dist > base_dist + rule["style_tolerance"]:
        losses.append(f"style distance {dist:.2f} vs {base_dist:.2f} at {baseline['type']}")
    top1 = row["assistant"]["top1_agreement"]
    if top1 < rule["min_assistant_top1"]:
        losses.append(f"reply-token agreement {top1:.0%} < {rule['min_assistant_top1']:.0%}")
    if losses:
        return False, f"{row['type']} loses your style ({'; '.join(losses)})"
    return True, f"{row['type']} keeps your style"


def choose(rows: list[dict], baseline: dict, rule: dict) -> tuple[str, str]:
    """(the main file's type, the reason in words): the smallest quant that keeps the style; when none does, the
    baseline itself (F16: the only file measured to carry it)."""
    said = []
    for row in sorted(rows, key=lambda r: r["size_bytes"]):
        kept, why = keeps_style(row, baseline, rule)
        if kept:
            said.append(f"chose {row['type']}, {row['size_bytes'] / 1e6:,.0f} MB")
            return row["type"], "; ".join(said)
        said.append(why)
    said.append(f"no quant keeps it, so the main file is the {baseline['type']} itself "
                f"({baseline['size_bytes'] / 1e6:,.0f} MB)")
    return baseline["type"], "; ".join(said)


def kept_label(row: dict, baseline: dict, rule: dict) -> str:
    """A ladder table's last column: "baseline" for the F16 row itself, else "yes" or "no" (keeps_style)."""
    return "baseline" if row is baseline else ("yes" if keeps_style(row, baseline, rule)[0] else "no")


def table_lines(rows: list[dict], baseline: dict, rule: dict) -> list[str]:
    """The one table: each file, its size, reply-token agreement and KL, style figures, kept?"""
    lines = [f"  {'file':<7} {'size':>8} {'reply top-1':>11} {'reply KL':>9} {'style':>6} {'yours':>6} "
             f"{'marker':>7} {'words':>6} {'greedy=HF':>9} {'imatrix':>7}  kept?"]
    for row in [baseline, *rows]:
        style, greedy = row["style"], row["greedy"]
        kept = kept_label(row, baseline, rule)
        lines.append(
            f"  {row['type']:<7} {row['size_bytes'] / 1e6:>5,.0f} MB {row['assistant']['top1_agreement']:>11.1%} "
            f"{row['assistant']['mean_kl']:>9.4f} {style['distance']:>6.2f} "
            f"{'-' if style['pass_as_yours'] is None else format(style['pass_as_yours'], '.0%'):>6} "
            f"{'-' if style['marker_share'] is None else format(style['marker_share'], '.0%'):>7} "
            f"{style['words_mean']:>6.1f} {sum(g['same'] for g in greedy):>5}/{len(greedy):<3} "
            f"{'yes' if row.get('imatrix') else '-':>7}  {kept}")
    return lines
