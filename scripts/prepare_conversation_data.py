"""Turn your chat exports into leak-free training and evaluation sets.

Reads:   every .json, .jsonl and .txt file under dataset/ (or --input), recursively, zip archives included (read in
         place, never unpacked). The format of each file is detected (--format forces one): the original seed JSON,
         instruction pairs, ChatGPT and Claude.ai exports, Telegram Desktop result.json and HTML (messages.html),
         VK's archive, Facebook Messenger and Instagram JSON, Slack workspace exports, WhatsApp .txt,
         DiscordChatExporter JSON, ShareGPT, OpenAI/HF "messages" JSONL.
Writes:  data/ (or --output):
           train_dataset.jsonl, eval_dataset.jsonl   one example per line:
               {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...],
                "conversation_id": ..., "source": ...}
           prepare_report.json                       every file, format and message accounted for
           token_lengths.png                         histogram of example lengths in tokens

Whose voice is learned: the assistant side of assistant exports (ChatGPT, Claude, ...); in messenger exports
(Telegram, WhatsApp, Discord) the person named by `me` (--me NAME, repeatable; a display name or an account id).

The train/eval split is by conversation and made before examples are expanded, so no conversation feeds both.

Run:
    prepare_dataset.bat / ./prepare_dataset.sh --me "Alice"
    python scripts/prepare_conversation_data.py --input DIR --output DIR [--me NAME ...] [--mode conversational]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import sys
import unicodedata
import zipfile
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ftg.chat_formats import (HEAD_BYTES, MESSENGER_FORMATS, PARSERS, FormatError, Message, PartsStream, chat_parts,
                              detect, export_owner_of, read_messages)
from ftg.config import add_config_arguments, config_from_args, describe
from ftg.errors import UserError, run_main
from ftg.files import save_png, write_json
from ftg.paths import EVAL_FILE, LENGTHS_PLOT, PREPARE_REPORT, TRAIN_FILE


CANDIDATE_SUFFIXES = (".json", ".jsonl", ".txt")
NOT_CHATS = {"user.json", "users.json", "message_feedback.json", "shared_conversations.json", "model_comparisons.json",
             "projects.json", "memories.json", "channels.json", "groups.json", "dms.json", "mpims.json",
             "integration_logs.json", "canvases.json"}
"""Files that come inside ChatGPT, Claude and Slack exports next to the chats and hold none."""
META_SECTIONS = re.compile(r"(?:^|/)(?:your_facebook_activity|your_instagram_activity|personal_information|"
                           r"logged_information|security_and_login_information|ads_information|"
                           r"apps_and_websites_off_of_facebook|your_activity_across_facebook|activity_messages)/")
"""Folders of Meta's "Download your information" archive; only message_N.json files in them hold chats."""
CHARS_PER_TOKEN = 4
"""Length estimate without a tokenizer: ~4 characters per token for English (Cyrillic is nearer 2-3)."""


# ---------------------------------------------------------------------------------------------------------------
# Finding the files


@dataclass
class Source:
    name: str
    """Shown to the user and used in conversation ids: the path under the input folder, "archive.zip/member"."""
    path: Path
    member: str = ""
    """The file inside the zip archive `path`; "" for a plain file."""
    size: int = 0
    parts: list[tuple[Path, str]] = field(default_factory=list)
    """The chat's further files (path, member), read after this one: messages2.html, ... (see chat_parts)."""


@contextlib.contextmanager
def open_source(source: Source):
    """A seekable binary stream of the file, read from inside its zip archive when it is in one."""
    if source.parts:
        with contextlib.ExitStack() as stack:
            archives: dict[Path, zipfile.ZipFile] = {}

            def opener(path: Path, member: str):
                if not member:
                    return lambda: path.open("rb")
                if path not in archives:
                    archives[path] = stack.enter_context(zipfile.ZipFile(path))
                return lambda: archives[path].open(member)

            files = [opener(source.path, source.member)] + [opener(path, member) for path, member in source.parts]
            with io.BufferedReader(PartsStream(files), buffer_size=1024 * 1024) as stream:
                yield stream
        return
    if not source.member:
        with source.path.open("rb") as stream:
            yield stream
        return
    with zipfile.ZipFile(source.path) as archive, archive.open(source.member) as stream:
        yield stream


def find_sources(root: Path, problems: list[dict], output_dir: Path) -> tuple[list[Source], int]:
    """Candidate files under root (zip members included) and the number of other files passed over.

    Files under output_dir are left out, so an output folder inside the input is not read back as input."""
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not p.resolve().is_relative_to(output_dir.resolve()))
    base = root.parent if root.is_file() else root
    found: dict[str, Source] = {}
    for path in files:
        name = path.relative_to(base).as_posix()
        if path.suffix.lower() == ".zip":
            try:
                with zipfile.ZipFile(path) as archive:
                    for info in archive.infolist():
                        if not info.is_dir():
                            found[f"{name}/{info.filename}"] = Source(f"{name}/{info.filename}", path, info.filename,
                                                                      info.file_size)
            except (zipfile.BadZipFile, OSError) as exc:
                problems.append({"file": name, "problem": f"not a readable zip archive ({exc})"})
        else:
            found[name] = Source(name, path, "", path.stat().st_size)
    # A chat split over several files (Telegram HTML, VK, Messenger, Slack days) becomes one source, named by its
    # folder; users.json is shared by a Slack export's channels.
    sources, grouped = [], set()
    for group in chat_parts(list(found)):
        first, rest = found[group[0]], [found[n] for n in group[1:]]
        folder = os.path.commonpath([n.rpartition("/")[0] or "." for n in group[1:] or group])
        name = f"{folder}/ ({len(group)} files)" if rest else first.name
        sources.append(Source(name, first.path, first.member, sum(s.size for s in [first, *rest]),
                              [(s.path, s.member) for s in rest]))
        grouped.update(group)
    ignored = 0
    for name, source in found.items():
        if name in grouped:
            continue
        if is_candidate(name):
            sources.append(source)
        else:
            ignored += 1
    return sources, ignored


def is_candidate(name: str) -> bool:
    """Whether a file may hold chats: .json/.jsonl/.txt, but not a README or an export's account details."""
    base = name.rsplit("/", 1)[-1].lower()
    if META_SECTIONS.search(name):
        return False  # a Meta archive's other data; its chats (message_N.json) are grouped by chat_parts
    return base.endswith(CANDIDATE_SUFFIXES) and base not in NOT_CHATS and not base.startswith("readme")


def detect_format(source: Source, forced: str) -> str:
    """The file's format; raises FormatError naming the problem when the file cannot be used."""
    if source.size == 0:
        raise FormatError("empty file")
    with open_source(source) as stream:
        head = stream.read(HEAD_BYTES)
    for bom in (b"\xef\xbb\xbf",):
        head = head.removeprefix(bom)
    if not head.strip():
        raise FormatError("empty file (only blanks)")
    fmt = forced or detect(source.member or source.name, head)
    if not fmt:
        raise FormatError(
            "unknown format: not a chat export this tool knows. If it is one, force it with --format "
            f"({', '.join(PARSERS)})"
        )
    return fmt


# ---------------------------------------------------------------------------------------------------------------
# Cleaning

INVISIBLE = re.compile("[\u200b\u200e\u200f\u2060\ufeff]")
"""Zero-width marks that exports (WhatsApp on iOS, Windows tools) put into text."""
URL = re.compile(r"(?:\bhttps?://|\bwww\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")
# Digits inside words, links or decimal numbers ("3.14159265358979") are not cards or phones.
CARD = re.compile(r"(?<![\w/=.,])\d(?:[ -]?\d){12,18}(?![\w/]|[.,]\d)")
PHONE = re.compile(
    r"(?<![\w/=+.,])(?:\+\d{1,3}[\s-]?)?(?:\(\d{2,5}\)[\s-]?)?\d{2,5}(?:[\s-]?\d{2,4}){1,4}(?![\w/]|[.,]\d)"
)
TEN_DIGITS = re.compile(r"\d(?:[\s().+-]{0,3}\d){9}")
DATE_LIKE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}|^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}$")


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match[0])
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn(digits) else match[0]


def _phone(match: re.Match) -> str:
    text = match[0]
    digits = sum(c.isdigit() for c in text)
    # A phone has 10-15 digits ("+7 912 345-67-89", "(555) 123-4567"); dates and plain numbers are left alone.
    if not 10 <= digits <= 15 or DATE_LIKE.match(text):
        return text
    return "[PHONE]"


def clean_text(text: str, scrub_pii: bool, scrub_urls: bool, pii: Counter) -> str:
    """Normalise Unicode (NFC), line endings and invisible marks; replace personal data with typed placeholders."""
    text = INVISIBLE.sub("", unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))).strip()
    if not scrub_pii or not text:
        return text
    if scrub_urls:
        text, n = URL.subn("[URL]", text)
        pii["url"] += n
    if "@" in text:
        text, n = EMAIL.subn("[EMAIL]", text)
        pii["email"] += n
    # Fast path: most messages hold no run of 10+ digits, so they can hold no card or phone number.
    if TEN_DIGITS.search(text):
        for name, pattern, replace in (("card", CARD, _card), ("phone", PHONE, _phone)):
            before = text.count(f"[{name.upper()}]")
            text = pattern.sub(replace, text)
            pii[name] += text.count(f"[{name.upper()}]") - before
    return text


# ---------------------------------------------------------------------------------------------------------------
# Lengths in tokens


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


# ---------------------------------------------------------------------------------------------------------------
# Conversations -> turns -> examples


@dataclass
class Turn:
    role: str
    text: str
    messages: int = 1
    speaker: str = ""
    used: bool = False
    reason: str = ""
    """Why its messages were not used, when they were not."""


@dataclass
class Totals:
    files: list[dict] = field(default_factory=list)
    formats: Counter = field(default_factory=Counter)
    messages_read: int = 0
    messages_used: int = 0
    skipped: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=lambda: Counter(email=0, phone=0, card=0, url=0))
    conversations: int = 0
    conversations_used: dict = field(default_factory=lambda: {"train": 0, "eval": 0})
    examples: dict = field(default_factory=lambda: {"train": 0, "eval": 0})
    examples_duplicate: int = 0
    examples_shortened: int = 0
    lengths: array = field(default_factory=lambda: array("I"))


def matches_me(message: Message, me: set[str]) -> bool:
    """`me` holds casefolded display names and ids, never ""; Telegram ids match with or without their "user"
    prefix; a message's aliases (Slack's handle, real and display name) match like its speaker."""
    speaker_id = message.speaker_id.casefold()
    return not me.isdisjoint((message.speaker.casefold(), message.login.casefold(), speaker_id,
                              speaker_id.removeprefix("user"), *(alias.casefold() for alias in message.aliases)))


def build_turns(messages: list[Message], messenger: bool, me: set[str], cfg, totals: Totals) -> list[Turn]:
    """Clean the messages of one conversation and merge consecutive messages of one side into turns.

    Unusable messages are counted in totals.skipped here; the returned turns alternate user/assistant after an
    optional leading system turn (leading replies and trailing prompts are returned with `reason` set).
    """
    turns: list[Turn] = []
    for message in messages:
        totals.messages_read += 1
        if message.skip:
            totals.skipped[message.skip] += 1
            continue
        role = message.role
        if messenger:
            role = "assistant" if matches_me(message, me) else "user"
            if role == "assistant" and message.forwarded:
                totals.skipped["forwarded"] += 1
                continue
        if role == "system" and any(t.role != "system" for t in turns):
            totals.skipped["system_not_first"] += 1
            continue
        text = clean_text(message.text, cfg.data.scrub_pii, cfg.data.scrub_urls, totals.pii)
        if not text:
            totals.skipped["empty"] += 1
            continue
        last = turns[-1] if turns else None
        if messenger and message.group and role == "user" and (last is None or last.speaker != message.speaker
                                                                  or last.role != "user"):
            text = f"{message.speaker or 'Someone'}: {text}"
        if last is not None and last.role == role:
            last.text += "\n" + text
            last.messages += 1
            last.speaker = message.speaker
        else:
            turns.append(Turn(role, text, speaker=message.speaker))
    first = 1 if turns and turns[0].role == "system" else 0
    while len(turns) > first and turns[first].role == "assistant":
        turns[first].reason = "reply_without_prompt"
        first += 1
    last = len(turns)
    while last > first and turns[last - 1].role == "user":
        turns[last - 1].reason = "prompt_without_reply"
        last -= 1
    if turns and turns[0].role == "system" and last == first:
        turns[0].reason = "no_exchange"
    return turns


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


TO_JSON = json.JSONEncoder(ensure_ascii=False).encode
"""json.dumps(x, ensure_ascii=False) without building an encoder per call (json.dumps does for any non-default
option): one example line per call at 1M messages."""


def unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) from the parts: the seeded split must not depend on Python's hash salt."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Writer:
    """Appends examples to the temporary train/eval files, removes exact duplicates, tracks the split."""

    def __init__(self, folder: Path, cfg, lengths: Lengths, totals: Totals):
        self.folder, self.cfg, self.lengths, self.totals = folder, cfg, lengths, totals
        self.files = {
            "train": (folder / (TRAIN_FILE + ".tmp")).open("w", encoding="utf-8", newline="\n"),
            "eval": (folder / (EVAL_FILE + ".tmp")).open("w", encoding="utf-8", newline="\n"),
        }
        self.seen: set[int] = set()
        """8-byte hashes of the examples written so far (~70 bytes of memory per example)."""
        self.first_train: tuple[float, str] | None = None
        """The train conversation with the smallest split hash: moved to eval if eval would stay empty."""

    def add_conversation(self, conversation_id: str, source: str, turns: list[Turn]) -> None:
        data = self.cfg.data
        system = turns[0] if turns and turns[0].role == "system" and not turns[0].reason else None
        body = [t for t in turns if not t.reason and t.role != "system"]
        exchanges = list(zip(body[0::2], body[1::2]))
        draw = unit_hash(str(data.split_seed), conversation_id)
        side = "eval" if draw < data.eval_fraction else "train"
        written = 0
        # Every example of the conversation ends the same way: encoded once per conversation, not per example.
        line_end = f', "conversation_id": {TO_JSON(conversation_id)}, "source": {TO_JSON(source)}}}\n'
        for first, last in example_ranges(len(exchanges), data.mode, data.window_sizes):
            fitted = fit_example(system, exchanges, first, last, self.lengths, data.max_example_tokens)
            if fitted is None:
                for turn in exchanges[last]:
                    turn.reason = turn.reason or "reply_too_long"
                continue
            messages, tokens, kept_first, shortened = fitted
            self.totals.examples_shortened += shortened
            text = TO_JSON(messages)
            key = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
            if key in self.seen:
                self.totals.examples_duplicate += 1
                for user, reply in exchanges[kept_first:last + 1]:
                    user.reason = user.reason or "duplicate"
                    reply.reason = reply.reason or "duplicate"
                continue
            self.seen.add(key)
            # The messages are already JSON (for the duplicate check); wrap them rather than encode them again.
            self.files[side].write(f'{{"messages": {text}{line_end}')
            self.totals.lengths.append(tokens)
            self.totals.examples[side] += 1
            written += 1
            if system is not None and messages[0]["role"] == "system":
                system.used = True
            for user, reply in exchanges[kept_first:last + 1]:
                user.used = reply.used = True
        if written:
            self.totals.conversations_used[side] += 1
            if side == "train" and (self.first_train is None or draw < self.first_train[0]):
                self.first_train = (draw, conversation_id)
        for turn in turns:
            if turn.used:
                self.totals.messages_used += turn.messages
            else:
                self.totals.skipped[turn.reason or "shortened_away"] += turn.messages

    def finish(self) -> None:
        """Close the files; if eval is empty, move the train conversation with the smallest split draw there."""
        for handle in self.files.values():
            handle.close()
        if (self.totals.examples["eval"] == 0 and self.cfg.data.eval_fraction > 0 and self.first_train
                and self.totals.conversations_used["train"] >= 2):
            moved = self.first_train[1]
            train_tmp, eval_tmp = self.folder / (TRAIN_FILE + ".tmp"), self.folder / (EVAL_FILE + ".tmp")
            kept_tmp = self.folder / (TRAIN_FILE + ".tmp2")
            with train_tmp.open(encoding="utf-8") as src, kept_tmp.open("w", encoding="utf-8", newline="\n") as keep, \
                    eval_tmp.open("w", encoding="utf-8", newline="\n") as held:
                for line in src:
                    if json.loads(line)["conversation_id"] == moved:
                        held.write(line)
                        self.totals.examples["eval"] += 1
                        self.totals.examples["train"] -= 1
                    else:
                        keep.write(line)
            os.replace(kept_tmp, train_tmp)
            self.totals.conversations_used["train"] -= 1
            self.totals.conversations_used["eval"] += 1

    def publish(self) -> None:
        for name in (TRAIN_FILE, EVAL_FILE):
            os.replace(self.folder / (name + ".tmp"), self.folder / name)

    def discard(self) -> None:
        for name in (TRAIN_FILE, EVAL_FILE):
            (self.folder / (name + ".tmp")).unlink(missing_ok=True)


def conversations(messages, gap_seconds: float | None):
    """Group a file's messages into conversations: a new chat key, or (messengers) a silence longer than the gap."""
    current: list[Message] = []
    key, last_time = None, None
    for message in messages:
        new_chat = message.conversation != key
        silence = (gap_seconds is not None and message.time is not None and last_time is not None
                   and message.time - last_time > gap_seconds)
        if (new_chat or silence) and current:
            yield key, current
            current = []
        key = message.conversation
        if message.time is not None:
            last_time = message.time
        current.append(message)
    if current:
        yield key, current


# ---------------------------------------------------------------------------------------------------------------
# The stage


def participants_table(sources: list[tuple[Source, str]]) -> str:
    """Who wrote how many usable messages in the messenger exports, for choosing `me`; "" when nobody did."""
    counts: Counter = Counter()
    for source, fmt in sources:
        try:
            with open_source(source) as stream:
                for message in read_messages(fmt, stream, []):
                    if not message.skip and message.speaker + message.speaker_id:
                        counts[(message.speaker, message.speaker_id)] += 1
        except (FormatError, OSError, zipfile.BadZipFile, EOFError, zlib.error):
            pass  # the main pass reports the file's problem
    if not counts:
        return ""
    rows = [f"  {n:>9,}  {name or '(no name)'}" + (f"  (id {sid})" if sid else "")
            for (name, sid), n in counts.most_common(30)]
    more = f"\n  ... and {len(counts) - 30} more" if len(counts) > 30 else ""
    return "\n".join(["   messages  participant"] + rows) + more


def export_owner(sources: list[tuple[Source, str]]) -> list[tuple[str, str, str]] | None:
    """(format, name, id) of the account owner for each messenger format among the files, when each of those
    formats names exactly one owner (a full Telegram export's personal_information, VK's own-message marks, a
    Messenger/Instagram two-person thread); None when any format names none or several (WhatsApp and Discord files
    never do). Files of a format that do not name one (a one-chat Telegram export) follow the one that does."""
    owners: dict[str, set] = {fmt: set() for _, fmt in sources}
    for source, fmt in sources:
        try:
            with open_source(source) as stream:
                owner = export_owner_of(fmt, stream)
        except (OSError, zipfile.BadZipFile, EOFError, zlib.error):
            continue  # the main pass reports the file's problem
        if owner:
            owners[fmt].add(owner)
    if any(len({account_id for _, account_id in found}) != 1 for found in owners.values()):
        return None
    return [(fmt, *sorted(found)[0]) for fmt, found in owners.items()]


def check_settings(data) -> None:
    """Refuse settings that cannot work, before any file is read."""
    if data.format != "auto" and data.format not in PARSERS:
        raise UserError(f"unknown --format '{data.format}'. Use auto or one of: {', '.join(PARSERS)}.")
    if data.mode not in ("instruct", "conversational"):
        raise UserError(f"unknown --mode '{data.mode}'. Use instruct or conversational.")
    if not 0 <= data.eval_fraction < 1:
        raise UserError(f"eval_fraction must be from 0 to below 1, got {data.eval_fraction}.")
    if data.max_example_tokens < 16:
        raise UserError(f"max_example_tokens must be at least 16, got {data.max_example_tokens}.")


def usable_sources(input_dir: Path, output_dir: Path, fmt_setting: str) -> tuple[list[tuple[Source, str]], list, int]:
    """(source, format) of every chat export found, the files that failed, and how many other files were passed over."""
    failed: list[dict] = []
    sources, ignored = find_sources(input_dir, failed, output_dir)
    usable: list[tuple[Source, str]] = []
    for source in sources:
        try:
            usable.append((source, detect_format(source, "" if fmt_setting == "auto" else fmt_setting)))
        except (FormatError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            failed.append({"file": source.name, "problem": str(exc)})
    for problem in failed:
        print(f"  SKIPPED {problem['file']}: {problem['problem']}")
    if ignored:
        print(f"  passed over {ignored} files that hold no chats (pictures, README, user.json, ...)")
    if not usable:
        raise UserError(
            f"no chat export found in {input_dir} ({len(sources)} candidate files, {ignored} other files). "
            "Put your exports there (ChatGPT/Claude zip, Telegram result.json, WhatsApp .txt, ...) or pass --input."
        )
    return usable, failed, ignored


def whose_voice(data, usable: list[tuple[Source, str]]) -> set[str]:
    """The names and ids (casefolded) whose messages are the replies to learn: --me, else the export's owner; without
    either, messenger exports stop with the participants table."""
    me = {name.casefold() for name in data.me if name.strip()}
    messenger_sources = [(s, f) for s, f in usable if f in MESSENGER_FORMATS]
    if messenger_sources and not me:
        for fmt, name, account_id in export_owner(messenger_sources) or []:
            data.me = [*data.me, account_id]  # kept in the report's "me"
            me.add(account_id.casefold())
            export = {"telegram": "the Telegram export", "vk": "the VK archive", "meta": "the Messenger/Instagram "
                      "threads"}[fmt]
            print(f"Learning the voice of {name or 'the account owner'} (id {account_id}): the owner of {export}. "
                  "To learn someone else's, pass --me NAME.")
    table = participants_table(messenger_sources) if messenger_sources and not me else ""
    if table:
        names = ", ".join(s.name for s, _ in messenger_sources[:3])
        raise UserError(
            f"messenger exports ({names}) need to know whose voice to learn, and `me` is not set. "
            f"Participants:\n{table}\n"
            "Set it with --me NAME (repeat it for several names or ids), or in config.yaml: data.me: [\"NAME\"]."
        )
    return me - {""}  # an empty name would match every message without a login or id


def run(cfg) -> Path:
    """Read every export under the input folder and write train/eval .jsonl files; returns the output folder."""
    data = cfg.data
    input_dir = Path(data.input).expanduser().resolve() if data.input else cfg.paths.dataset_dir
    output_dir = Path(data.output).expanduser().resolve() if data.output else cfg.paths.data_dir
    check_settings(data)
    if not input_dir.exists():
        raise UserError(f"{input_dir} does not exist. Put your chat exports there, or pass --input FOLDER.")
    print("Settings:\n" + describe(cfg, ["data"]))
    print(f"Reading {input_dir}")
    usable, failed, ignored = usable_sources(input_dir, output_dir, data.format)
    me = whose_voice(data, usable)

    lengths, measured_with = load_lengths(cfg)
    print(f"Lengths: {measured_with}")
    output_dir.mkdir(parents=True, exist_ok=True)
    totals = Totals()
    writer = Writer(output_dir, cfg, lengths, totals)
    gap = data.session_gap_hours * 3600
    try:
        with tqdm(unit=" msg", desc="Reading messages", mininterval=1.0) as progress:
            for source, fmt in usable:
                process_file(source, fmt, me, cfg, gap, writer, totals, progress)
        writer.finish()
    except BaseException:
        writer.discard()
        raise
    for entry in totals.files:
        print(f"  {entry['status']:>7} {entry['file']} [{entry['format']}] {entry['messages']:,} messages"
              + (f": {entry['problem']}" if entry.get("problem") else "")
              + "".join(f"\n          note: {n}" for n in entry["notes"]))

    report = make_report(totals, failed, ignored, input_dir, output_dir, measured_with, cfg)
    write_json(output_dir / PREPARE_REPORT, report)
    print_summary(report)
    print_role_check(output_dir / (TRAIN_FILE + ".tmp"), totals.files)
    if totals.examples["train"] + totals.examples["eval"] == 0:
        writer.discard()
        raise UserError(
            f"nothing usable: no example could be made from {input_dir} (see the lines above and "
            f"{output_dir / PREPARE_REPORT}). The previous train/eval files, if any, were left as they were."
        )
    writer.publish()
    save_histogram(totals.lengths, data.max_example_tokens, measured_with, output_dir / LENGTHS_PLOT)
    print(f"\nWrote {output_dir / TRAIN_FILE} ({totals.examples['train']:,} examples) and "
          f"{output_dir / EVAL_FILE} ({totals.examples['eval']:,}).")
    print("Next: run finetune_gemma.bat / ./finetune_gemma.sh")
    return output_dir


def process_file(source: Source, fmt: str, me: set[str], cfg, gap: float, writer: Writer, totals: Totals,
                 progress) -> None:
    """Stream one file's conversations into the writer; a broken file is reported and the run goes on."""
    messenger = fmt in MESSENGER_FORMATS
    notes: list[str] = []
    entry = {"file": source.name, "format": fmt, "status": "ok", "messages": 0, "notes": notes}
    read_before = totals.messages_read
    speakers: Counter = Counter()
    mine = 0
    session_numbers: Counter = Counter()
    try:
        with open_source(source) as stream:
            for key, messages in conversations(read_messages(fmt, stream, notes), gap if messenger else None):
                session_numbers[key] += 1
                conversation_id = f"{source.name}:{key}" + (f"@{session_numbers[key]}" if messenger else "")
                totals.conversations += 1
                if messenger:
                    for message in messages:
                        if not message.skip:
                            is_me = matches_me(message, me)
                            speakers[(message.speaker or message.speaker_id, is_me)] += 1
                            mine += is_me
                turns = build_turns(messages, messenger, me, cfg, totals)
                writer.add_conversation(conversation_id, f"{fmt}:{source.name}", turns)
                progress.update(len(messages))
    except (FormatError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        read = totals.messages_read - read_before
        entry["status"] = "partial" if read else "failed"
        entry["problem"] = f"{exc}" + (f" (the {read:,} messages before it were kept)" if read else "")
    entry["messages"] = totals.messages_read - read_before
    if speakers:
        entry["speakers"] = [{"name": name, "messages": n, "you": is_me} for (name, is_me), n in speakers.most_common(20)]
    if messenger and speakers and not mine:
        top = ", ".join(f"{name} ({n:,})" for (name, _), n in speakers.most_common(5))
        notes.append(f"none of your --me names wrote here, so nothing is learned from it; speakers: {top}")
    totals.formats[fmt] += 1
    totals.files.append(entry)


def make_report(totals: Totals, failed, ignored, input_dir, output_dir, measured_with, cfg) -> dict:
    lengths = sorted(totals.lengths)
    skipped = dict(sorted(totals.skipped.items(), key=lambda kv: -kv[1]))
    report = {
        "input": str(input_dir),
        "output": str(output_dir),
        "mode": cfg.data.mode,
        "me": list(cfg.data.me),
        "files_read": sum(1 for f in totals.files if f["status"] != "failed"),
        "files_failed": failed + [{"file": f["file"], "problem": f["problem"]} for f in totals.files
                                  if f["status"] == "failed"],
        "files_partly_read": [{"file": f["file"], "problem": f["problem"]} for f in totals.files
                              if f["status"] == "partial"],
        "files_not_chat_exports_by_name": ignored,
        "formats": dict(totals.formats),
        "files": totals.files,
        "conversations": totals.conversations,
        "conversations_train": totals.conversations_used["train"],
        "conversations_eval": totals.conversations_used["eval"],
        "messages_read": totals.messages_read,
        "messages_used": totals.messages_used,
        "messages_skipped": skipped,
        "pii_replaced": dict(totals.pii),
        "examples_train": totals.examples["train"],
        "examples_eval": totals.examples["eval"],
        "examples_duplicate_dropped": totals.examples_duplicate,
        "examples_shortened": totals.examples_shortened,
        "token_lengths": {
            "measured_with": measured_with,
            "limit": cfg.data.max_example_tokens,
            "max": lengths[-1] if lengths else 0,
            "mean": round(sum(lengths) / len(lengths), 1) if lengths else 0,
            "p95": lengths[int(0.95 * (len(lengths) - 1))] if lengths else 0,
        },
    }
    assert report["messages_read"] == report["messages_used"] + sum(skipped.values()), "message accounting is off"
    return report


def print_summary(report: dict) -> None:
    rows = [
        ("files read", report["files_read"]),
        ("files failed", len(report["files_failed"])),
        ("formats", ", ".join(f"{k} {v}" for k, v in report["formats"].items()) or "-"),
        ("conversations", report["conversations"]),
        ("messages read", report["messages_read"]),
        ("messages used", report["messages_used"]),
        *((f"  skipped: {reason}", n) for reason, n in report["messages_skipped"].items()),
        ("PII replaced", ", ".join(f"{k} {v}" for k, v in report["pii_replaced"].items())),
        ("examples train", report["examples_train"]),
        ("examples eval", report["examples_eval"]),
        ("duplicates dropped", report["examples_duplicate_dropped"]),
        ("longest example", f"{report['token_lengths']['max']} tokens (limit {report['token_lengths']['limit']})"),
    ]
    print()
    for label, value in rows:
        print(f"  {label:<28} {value:,}" if isinstance(value, int) else f"  {label:<28} {value}")


def print_role_check(train_file: Path, files: list[dict], pairs: int = 3, width: int = 50) -> None:
    """Three sample pairs and who wrote what, so a wrong voice (the roles the wrong way round) shows before
    training: "you" is the side the model learns to write."""
    def short(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "…"

    people: Counter = Counter()
    for entry in files:
        for speaker in entry.get("speakers", []):
            people[(speaker["name"], speaker["you"])] += speaker["messages"]
    if people:
        print("\n  Who is who (usable messages; \"you\" is the voice the model learns):")
        for (name, is_me), n in people.most_common(10):
            print(f"  {n:>9,}  {name or '(no name)'}" + ("  <- you" if is_me else ""))
    with contextlib.suppress(OSError), train_file.open(encoding="utf-8") as lines:
        samples = [json.loads(line)["messages"][-2:] for _, line in zip(range(pairs), lines)]
        if samples:
            print("\n  Sample pairs (them -> you); if \"you\" is not your voice, fix --me:")
        for prompt, reply in samples:
            print(f"    them: {short(prompt['content'])} → you: {short(reply['content'])}")


def save_histogram(lengths: array, limit: int, measured_with: str, path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts, edges = np.histogram(np.frombuffer(lengths, dtype=np.uint32), bins=50)  # no copy of the lengths
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.stairs(counts, edges, fill=True, color="#4c72b0")
    axes.axvline(limit, color="#c44e52", linestyle="--", label=f"limit {limit}")
    axes.set_xlabel("tokens per example" + ("" if measured_with.startswith("tokenizer") else " (estimated)"))
    axes.set_ylabel("examples")
    axes.set_title(f"Example lengths ({len(lengths):,} examples)")
    axes.legend()
    figure.tight_layout()
    save_png(figure, path, dpi=80)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, ["paths", "model", "data"])
    args = parser.parse_args(argv)
    return run_main(lambda: run(config_from_args(args)) and 0)


if __name__ == "__main__":
    sys.exit(main())
