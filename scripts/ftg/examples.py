"""From a conversation's exchanges to training examples: which exchanges make each example (instruct: one each;
conversational: also the growing history and sliding windows), its length in tokens of the model's own chat template,
and fitting it into max_example_tokens."""

from __future__ import annotations

from ftg.errors import UserError
from ftg.turns import Turn

CHARS_PER_TOKEN = 4
"""Length estimate without a tokenizer: ~4 characters per token for English (Cyrillic is nearer 2-3)."""


class Lengths:
    """Example length in tokens of the model's own chat template, or a character estimate without a tokenizer."""

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer

    def count(self, messages: list[dict]) -> int:
        if self.tokenizer is None:
            return sum(len(m["content"]) for m in messages) // CHARS_PER_TOKEN + 4 * len(messages) + 1
        text = self.tokenizer.apply_chat_template(messages, tokenize=False)
        # The template already starts with <bos>; adding special tokens again would double it.
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def keep_end(self, text: str, tokens: int) -> str:
        """The last `tokens` tokens of text (about), cut at a token boundary."""
        if tokens <= 0:
            return ""
        if self.tokenizer is None:
            return text[-tokens * CHARS_PER_TOKEN:]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer.decode(ids[-tokens:]) if len(ids) > tokens else text


def load_lengths(cfg) -> tuple[Lengths, str]:
    """The tokenizer of the selected model, or the estimate when no model is selected (said in the report)."""
    from ftg.models import load_tokenizer, resolve_model_dir

    try:
        model_dir = resolve_model_dir(cfg)
    except UserError as exc:
        if cfg.model.model:
            raise
        return Lengths(), f"estimate: characters / {CHARS_PER_TOKEN} (no model selected yet: {exc})"
    return Lengths(load_tokenizer(model_dir)), f"tokenizer and chat template of {model_dir}"


def example_ranges(n_exchanges: int, mode: str, windows: list[int]) -> list[tuple[int, int]]:
    """(first, last) exchange of each example. instruct: each exchange; conversational: also the growing history
    and the sliding windows of each size ending at every reply."""
    ranges = [(i, i) for i in range(n_exchanges)]
    if mode == "conversational":
        ranges += [(0, i) for i in range(1, n_exchanges)]
        ranges += [(i - k + 1, i) for k in windows if k > 1 for i in range(k, n_exchanges)]
    return list(dict.fromkeys(ranges))


def _render(system: Turn | None, exchanges: list[tuple[Turn, Turn]], first: int, last: int,
            first_prompt: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system.text}] if system else []
    for i in range(first, last + 1):
        user, reply = exchanges[i]
        messages.append({"role": "user", "content": first_prompt if i == first and first_prompt is not None
                         else user.text})
        messages.append({"role": "assistant", "content": reply.text})
    return messages


def fit_example(system, exchanges, first, last, lengths: Lengths, limit: int):
    """(messages, tokens, first exchange kept, shortened?) within `limit`: the oldest exchanges go first, then the
    system text, then the start of the first prompt. None when the final reply alone does not fit."""
    messages = _render(system, exchanges, first, last)
    tokens = lengths.count(messages)
    kept_first = first
    while tokens > limit and kept_first < last:
        kept_first += 1
        messages = _render(system, exchanges, kept_first, last)
        tokens = lengths.count(messages)
    if tokens <= limit:
        return messages, tokens, kept_first, kept_first != first
    reply_alone = lengths.count(_render(None, exchanges, last, last, first_prompt=""))
    if reply_alone > limit:
        return None
    if system is not None and lengths.count(_render(None, exchanges, last, last)) <= limit:
        messages = _render(None, exchanges, last, last)
        return messages, lengths.count(messages), last, True
    prompt = exchanges[last][0].text
    budget = limit - reply_alone
    while budget > 0:
        messages = _render(None, exchanges, last, last, first_prompt=lengths.keep_end(prompt, budget))
        tokens = lengths.count(messages)
        if tokens <= limit and messages[0]["content"].strip():
            return messages, tokens, last, True
        budget -= max(1, budget // 10)  # decoding and re-encoding can shift a few tokens; shrink and retry
    return None
