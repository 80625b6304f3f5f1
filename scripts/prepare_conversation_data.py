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

This file is the stage's flow and its writer; the pieces it calls are in ftg/: export_sources.py (finding the files),
chat_formats.py (reading each format), turns.py (conversations, whose side, turns), text_cleaning.py (Unicode and
personal data), examples.py (examples and their length in tokens), prepare_report.py (the accounting and the report).

Run:
    prepare_dataset.bat / ./prepare_dataset.sh --me "Alice"
    python scripts/prepare_conversation_data.py --input DIR --output DIR [--me NAME ...] [--mode conversational]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import zipfile
import zlib
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ftg.chat_formats import MESSENGER_FORMATS, PARSERS, FormatError, export_owner_of, read_messages
from ftg.config import add_config_arguments, config_from_args, describe
from ftg.errors import UserError, run_main
from ftg.examples import Lengths, example_ranges, fit_example, load_lengths
from ftg.export_sources import Source, detect_format, find_sources, open_source
from ftg.files import write_json
from ftg.paths import EVAL_FILE, LENGTHS_PLOT, PREPARE_REPORT, TRAIN_FILE
from ftg.prepare_report import Totals, make_report, print_role_check, print_summary, save_histogram
from ftg.turns import Turn, build_turns, conversations, matches_me


# ---------------------------------------------------------------------------------------------------------------
# Writing the examples


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, ["paths", "model", "data"])
    args = parser.parse_args(argv)
    return run_main(lambda: run(config_from_args(args)) and 0)


if __name__ == "__main__":
    sys.exit(main())
