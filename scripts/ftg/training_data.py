"""Turning data/*.jsonl conversations into token ids and labels for training.

Each line of train_dataset.jsonl / eval_dataset.jsonl is {"messages": [{"role", "content"}, ...], ...}. A
conversation is rendered with the tokenizer's own chat template (the official Gemma one) and tokenized once, without
adding special tokens, because the template already writes the single `<bos>`.

Labels: only the assistant ("model") turns carry a label, each including its end-of-turn token (`<end_of_turn>`,
Gemma 4's `<turn|>`) so the model learns to stop; the user turns, the system text, the turn headers, Gemma 4's empty
thinking channel and the newline after a turn are -100 (see ftg.chat_template.ChatFormat). The assistant spans are
found by rendering the growing prefixes of the conversation with the same template and comparing token counts, so the template saved with the model stays the official one (trl's assistant_only_loss
would need `{% generation %}` markers, which Gemma's template does not have).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

IGNORE_INDEX = -100
"""Label of a token that carries no loss (the value transformers' loss functions skip)."""

ROLES = ("system", "user", "assistant")


@dataclass
class DataStats:
    """What happened to the conversations of one file, printed before training."""

    conversations: int = 0
    used: int = 0
    truncated: int = 0
    tokens: int = 0
    label_tokens: int = 0
    skipped: list[str] = field(default_factory=list)
    """One line per skipped conversation: where it is and why."""

    def summary(self, name: str, max_seq_len: int) -> str:
        lines = [
            f"{name}: {self.used} of {self.conversations} conversations, {self.tokens:,} tokens "
            f"({self.label_tokens:,} trained assistant tokens)"
        ]
        if self.truncated:
            lines.append(f"  {self.truncated} conversations were longer than {max_seq_len} tokens and were cut there")
        for line in self.skipped[:10]:
            lines.append(f"  skipped {line}")
        if len(self.skipped) > 10:
            lines.append(f"  ... and {len(self.skipped) - 10} more skipped")
        return "\n".join(lines)


def read_conversations(path: Path, stats: DataStats) -> list[list[dict]]:
    """The `messages` lists of a .jsonl file; malformed lines are counted in `stats.skipped`, not dropped silently."""
    return list(iter_conversations(path, stats))


def iter_conversations(path: Path, stats: DataStats) -> Iterator[list[dict]]:
    """read_conversations, one conversation at a time (a caller that needs the first few reads no further)."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            stats.conversations += 1
            where = f"{path.name} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                stats.skipped.append(f"{where}: not valid JSON ({exc.msg})")
                continue
            messages = record.get("messages") if isinstance(record, dict) else None
            problem = _message_problem(messages)
            if problem:
                stats.skipped.append(f"{where}: {problem}")
                continue
            yield [{"role": m["role"], "content": m["content"]} for m in messages]


def _message_problem(messages) -> str:
    if not isinstance(messages, list) or not messages:
        return "no 'messages' list"
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"a message has no valid role (one of {', '.join(ROLES)})"
        if not isinstance(message.get("content"), str):
            return "a message has no text 'content'"
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return "no assistant reply to learn from"
    return ""


def _ids(tokenizer, text: str) -> list[int]:
    # The rendered text already starts with the template's <bos>; adding special tokens would double it.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def render_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return _ids(tokenizer, text)


def tokenize_conversation(tokenizer, messages: list[dict], max_seq_len: int, chat_format=None) -> dict:
    """{"input_ids", "labels", "truncated"} for one conversation; labels only on the model's turns and each turn's
    end-of-turn token.

    The sequence ends with the last reply exactly as an app prompts for it: the generation prompt (Gemma 4's ends
    with an empty thinking channel, which a rendered past reply lacks), the reply, its end-of-turn token. Earlier
    replies keep the form the template gives them as history, which is what the model sees of them when it answers.
    chat_format: ChatFormat.from_tokenizer(tokenizer), passed in so it is read once per file.
    Raises ValueError (with a reason) when the conversation cannot be used.
    """
    from ftg.chat_template import ChatFormat

    chat_format = chat_format or ChatFormat.from_tokenizer(tokenizer)

    def render(part, add_generation_prompt=False):
        return tokenizer.apply_chat_template(part, tokenize=False, add_generation_prompt=add_generation_prompt)

    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    try:
        prompt, reply = chat_format.reply_parts(render, messages[: last + 1])
        spans = []  # (start, end) character spans of the text to train: each reply and its end-of-turn token
        for index in range(last):
            if messages[index]["role"] == "assistant":
                start = len(render(messages[:index])) + len(chat_format.model_header)
                end = len(render(messages[: index + 1]).rstrip("\n"))
                spans.append((start, end))
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:  # the template raises on e.g. two user turns in a row
        raise ValueError(f"the chat template refused it: {exc}") from None
    text = prompt + reply + chat_format.end_of_turn
    spans.append((len(prompt), len(text)))
    input_ids = _ids(tokenizer, text)
    labels = [IGNORE_INDEX] * len(input_ids)
    for start, end in spans:
        before, through = _ids(tokenizer, text[:start]), _ids(tokenizer, text[:end])
        if input_ids[: len(through)] != through or through[: len(before)] != before:
            raise ValueError("its tokens change when the conversation grows (unusual text at a turn boundary)")
        labels[len(before) : len(through)] = input_ids[len(before) : len(through)]
    if input_ids.count(tokenizer.bos_token_id) != 1 or input_ids[0] != tokenizer.bos_token_id:
        raise ValueError(f"it does not start with exactly one <bos> (found {input_ids.count(tokenizer.bos_token_id)})")
    truncated = len(input_ids) > max_seq_len
    input_ids, labels = input_ids[:max_seq_len], labels[:max_seq_len]
    if all(label == IGNORE_INDEX for label in labels):
        raise ValueError(f"no assistant reply starts within the first {max_seq_len} tokens")
    return {"input_ids": input_ids, "labels": labels, "truncated": truncated}


def build_dataset(tokenizer, path: Path, max_seq_len: int):
    """A datasets.Dataset of input_ids + labels from one .jsonl file, and the DataStats describing it."""
    from datasets import Dataset
    from tqdm import tqdm

    from ftg.chat_template import ChatFormat

    stats = DataStats()
    conversations = read_conversations(path, stats)
    chat_format = ChatFormat.from_tokenizer(tokenizer)
    rows = {"input_ids": [], "labels": []}
    for number, messages in enumerate(tqdm(conversations, desc=f"tokenizing {path.name}", unit="conv"), start=1):
        try:
            sample = tokenize_conversation(tokenizer, messages, max_seq_len, chat_format)
        except ValueError as exc:
            stats.skipped.append(f"{path.name} conversation {number}: {exc}")
            continue
        rows["input_ids"].append(sample["input_ids"])
        rows["labels"].append(sample["labels"])
        stats.used += 1
        stats.truncated += sample["truncated"]
        stats.tokens += len(sample["input_ids"])
        stats.label_tokens += sum(label != IGNORE_INDEX for label in sample["labels"])
    return Dataset.from_dict(rows), stats, conversations


def prompt_and_reference(messages: list[dict]) -> tuple[list[dict], str]:
    """The conversation up to its last assistant turn (the prompt) and that turn's text (the reference reply)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def data_hash(paths: list[Path]) -> str:
    """sha256 over the bytes of the data files (a changed file means a new run)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode("utf-8"))
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def reply_conversations(path: Path, limit: int) -> list[list[dict]]:
    """Up to `limit` conversations of a data/*.jsonl file that end with a reply to a user message (what the report
    scores and shows); the others are counted and said."""
    from ftg.errors import UserError

    if not path.exists():
        raise UserError(f"{path} is missing: run prepare_dataset (it writes the held-out conversations).")
    conversations, stats, bad = [], DataStats(), 0
    for messages in iter_conversations(path, stats):
        if len(messages) >= 2 and messages[-1]["role"] == "assistant" and messages[-2]["role"] == "user":
            conversations.append(messages)
        else:
            bad += 1
        if len(conversations) >= limit:
            break
    bad += len(stats.skipped)
    if bad:
        print(f"  Skipped {bad} lines of {path} that are not a conversation ending with a reply.")
    if not conversations:
        raise UserError(f"{path} holds no usable conversation: run prepare_dataset again and read its report.")
    return conversations
