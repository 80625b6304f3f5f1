"""Readers for the chat exports people really have: one detector and one parser per format.

Every parser takes a binary stream (a file or a zip member, seekable) and a list to append notes to, and yields
`Message` records in conversation order, streaming: memory stays flat however big the file is (the largest unit held
at once is one ChatGPT/Claude conversation or one JSON record). A message that cannot be used is still yielded, with
`skip` set to the reason, so the stage can count it.

A parser raises only `FormatError` (the file is not valid, or breaks off); the messages yielded before it are good.
Anything else escaping a parser is a bug; tests/test_chat_formats.py fuzzes them with hypothesis.

The parsers live by family in formats_*.py (JSON streaming in formats_json.py; assistant exports, Telegram JSON and
Discord, WhatsApp, HTML, Meta, Slack); this module detects a file's format, holds the table of formats, and
groups the files of a chat that is split over several.

The shapes and their awkward cases are in the README's data section and in the hand-made fixtures under tests/exports/.
"""

from __future__ import annotations

import codecs
import io
import re
from typing import Callable, Iterator

import ijson

from ftg.chat_message import OWNER_ID, FormatError, Message, skip_bom, utf8_or_cp1251
from ftg.formats_assistant import (parse_chatgpt, parse_claude, parse_instruction, parse_messages, parse_seed,
                                   parse_sharegpt)
from ftg.formats_html import parse_telegram_html, parse_vk
from ftg.formats_json import READ_CHUNK
from ftg.formats_meta import meta_owner, parse_meta
from ftg.formats_slack import parse_slack
from ftg.formats_telegram_discord import parse_discord, parse_telegram, telegram_owner
from ftg.formats_whatsapp import parse_whatsapp, whatsapp_header

MESSENGER_FORMATS = ("telegram", "telegram_html", "vk", "meta", "whatsapp", "discord", "slack")
"""Formats where the learned voice is a person named by `me`; the others teach the assistant side."""

HEAD_BYTES = 64 * 1024
"""How much of a file the detectors look at."""


# ---------------------------------------------------------------------------------------------------------------
# Detection


def _json_paths(head: bytes) -> set[str]:
    """Key paths ("item.mapping", "chats") seen in the first bytes of a JSON or JSON Lines file."""
    paths = set()
    try:
        for count, (prefix, event, value) in enumerate(ijson.parse(io.BytesIO(head), multiple_values=True)):
            if event == "map_key":
                paths.add(f"{prefix}.{value}" if prefix else value)
            if count > 5000:
                break
    except ijson.JSONError:
        pass  # the head ends mid-value, or the JSON is broken; judge from what was seen
    return paths


DISCORD_PACKAGE_FILE = re.compile(r"(?:^|/)messages/c?\d+/messages\.json$")
DISCORD_PACKAGE = ("Discord's own data package holds only the messages you sent, so it cannot make training pairs; "
                   "export the chats with DiscordChatExporter (JSON) instead, which this tool reads")


def detect(name: str, head: bytes) -> str:
    """The format of a file from its name and first bytes (BOM removed); "" when it is none we know.

    Raises FormatError for an export that is recognised but cannot be used (Discord's own data package)."""
    if name.lower().endswith(".txt"):
        if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):  # saved as "Unicode" by Windows Notepad
            text = head[: len(head) // 2 * 2].decode("utf-16", errors="replace")
        else:
            try:
                text = head.decode("utf-8")
            except UnicodeDecodeError:
                text = head.decode(utf8_or_cp1251(head, [], ""), errors="replace")
        lines = [line for line in text.splitlines() if line.strip()][:30]
        return "whatsapp" if any(whatsapp_header(line) for line in lines) else ""
    paths = _json_paths(head)
    if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        if b'class="message__header"' in head:
            return "vk"
        if b'class="page_body chat_page"' in head or b'class="message default' in head:
            return "telegram_html"
        return ""
    if DISCORD_PACKAGE_FILE.search(name) or {"item.ID", "item.Contents"} <= paths:
        raise FormatError(DISCORD_PACKAGE)
    if "participants" in paths and {"messages.item.sender_name", "messages.item.senderName"} & paths:
        return "meta"
    if {"item.ts", "item.type"} <= paths or {"item.team_id", "item.profile"} <= paths:
        return "slack"
    for p in ("", "item."):
        if {p + "guild", p + "channel"} <= paths:
            return "discord"
        if {"chats", "personal_information"} & paths or {"name", "type", "id", "messages"} <= paths:
            return "telegram"
        if p + "mapping" in paths:
            return "chatgpt"
        if p + "chat_messages" in paths:
            return "claude"
        if p + "sender" in paths and {p + "userInput", p + "claudeOutputText"} & paths:
            return "seed"
        if p + "instruction" in paths or (p + "output" in paths and p + "input" in paths):
            return "instruction"
        if p + "conversations" in paths:
            return "sharegpt"
        if p + "messages" in paths:
            return "messages"
    return ""


PARSERS: dict[str, Callable[[object, list[str]], Iterator[Message]]] = {
    "seed": parse_seed,
    "instruction": parse_instruction,
    "chatgpt": parse_chatgpt,
    "claude": parse_claude,
    "telegram": parse_telegram,
    "whatsapp": parse_whatsapp,
    "discord": parse_discord,
    "sharegpt": parse_sharegpt,
    "messages": parse_messages,
    "telegram_html": parse_telegram_html,
    "vk": parse_vk,
    "meta": parse_meta,
    "slack": parse_slack,
}
"""Format name -> parser. The `--format` flag picks one by name; `detect` picks one per file otherwise."""


def read_messages(fmt: str, stream, notes: list[str]) -> Iterator[Message]:
    """Run one format's parser on a binary stream, after skipping a byte-order mark."""
    if fmt not in ("whatsapp", "telegram_html", "vk"):
        encoding = skip_bom(stream)
        if encoding == "utf-16":
            raise FormatError("UTF-16 JSON is not supported; save the file as UTF-8")
    yield from PARSERS[fmt](stream, notes)


def export_owner_of(fmt: str, stream) -> tuple[str, str] | None:
    """(name, id for `me`) of the account whose export this file is, where the export says so; None otherwise.

    Telegram: a full export's personal_information. VK: the archive is always its owner's, whose messages it marks.
    Messenger/Instagram: in a two-person thread, the participant the thread is not named after."""
    if fmt == "telegram":
        return telegram_owner(stream)
    if fmt == "vk":
        return "you (the VK archive's owner)", OWNER_ID
    if fmt == "meta":
        return meta_owner(stream)
    return None


# ---------------------------------------------------------------------------------------------------------------
# Chats split over several files

TELEGRAM_VK_PAGE = re.compile(r"messages(\d*)\.html", re.IGNORECASE)
META_PAGE = re.compile(r"message_(\d+)\.json")
SLACK_DAY = re.compile(r"\d{4}-\d\d-\d\d\.json")


def chat_parts(names: list[str]) -> list[list[str]]:
    """The files that together hold one chat, each group in reading order (oldest messages first).

    Telegram HTML: messages.html, messages2.html, ... VK: messages0.html holds the newest 50, so messages50.html,
    messages100.html, ... come first, highest number first. Messenger/Instagram: message_1.json is the newest, so
    the highest number first. Slack: a channel's days in date order, after the export's users.json (id -> name).
    Discord's data package: all its channel files, as one group (refused with one line). Names are "/" paths."""
    folders: dict[str, list[str]] = {}
    for name in names:
        folder, _, base = name.rpartition("/")
        folders.setdefault(folder, []).append(base)
    known = set(names)
    groups, discord = [], {}
    for folder, bases in folders.items():
        prefix = folder + "/" if folder else ""
        pages = {b: int(m[1] or 1) for b in bases if (m := TELEGRAM_VK_PAGE.fullmatch(b))}
        if pages:
            vk = "messages0.html" in (b.lower() for b in pages)
            groups.append([prefix + b for b in sorted(pages, key=pages.get, reverse=vk)])
        meta = {b: int(m[1]) for b in bases if (m := META_PAGE.fullmatch(b))}
        if meta:
            groups.append([prefix + b for b in sorted(meta, key=meta.get, reverse=True)])
        days = sorted(b for b in bases if SLACK_DAY.fullmatch(b))
        if days:
            root = folder.rpartition("/")[0]
            users = (root + "/" if root else "") + "users.json"
            groups.append(([users] if users in known else []) + [prefix + d for d in days])
        for base in bases:
            if base == "messages.json" and DISCORD_PACKAGE_FILE.search(prefix + base):
                discord.setdefault(folder.rpartition("/")[0].rpartition("/")[0], []).append(prefix + base)
    # A Discord package is one group with everything in it (channel.json, index.json, account/...): one line.
    for root, chats in discord.items():
        inside = sorted(n for n in names if n.startswith(root + "/") and n not in chats) if root else []
        groups.append(sorted(chats) + inside)
    return groups


class PartsStream(io.RawIOBase):
    """Several files read as one binary stream, one after another (the files of one chat). Seeking back starts
    over from the first file; the parsers only seek back to where they started."""

    def __init__(self, openers: list[Callable[[], object]]):
        super().__init__()
        self.openers, self.index, self.current, self.position = openers, -1, None, 0
        self._next()

    def _next(self) -> None:
        if self.current is not None:
            self.current.close()
        self.index += 1
        self.current = self.openers[self.index]() if self.index < len(self.openers) else None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.current is not None:
            count = self.current.readinto(buffer)
            if count:
                self.position += count
                return count
            self._next()
        return 0

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.position
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("PartsStream seeks from the start or the current position only")
        if offset < self.position:
            if self.current is not None:
                self.current.close()
            self.index, self.current, self.position = -1, None, 0
            self._next()
        while self.position < offset and self.read(min(offset - self.position, READ_CHUNK)):
            pass
        return self.position

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
        super().close()
