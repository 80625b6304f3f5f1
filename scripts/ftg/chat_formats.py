"""Readers for the chat exports people really have: one detector and one parser per format.

Every parser takes a binary stream (a file or a zip member, seekable) and a list to append notes to, and yields
`Message` records in conversation order, streaming: memory stays flat however big the file is (the largest unit held
at once is one ChatGPT/Claude conversation or one JSON record). A message that cannot be used is still yielded, with
`skip` set to the reason, so the stage can count it.

A parser raises only `FormatError` (the file is not valid, or breaks off); the messages yielded before it are good.
Anything else escaping a parser is a bug; tests/test_chat_formats.py fuzzes them with hypothesis.

The shapes and their awkward cases are in the README's data section and in the hand-made fixtures under tests/exports/.
"""

from __future__ import annotations

import calendar
import codecs
import io
import json
import re
from datetime import datetime
from typing import Callable, Iterator

import ijson

from ftg.chat_message import OWNER_ID, FormatError, Message, utf8_or_cp1251
from ftg.formats_html import parse_telegram_html, parse_vk
from ftg.formats_meta import meta_owner, parse_meta
from ftg.formats_slack import parse_slack

MESSENGER_FORMATS = ("telegram", "telegram_html", "vk", "meta", "whatsapp", "discord", "slack")
"""Formats where the learned voice is a person named by `me`; the others teach the assistant side."""

HEAD_BYTES = 64 * 1024
"""How much of a file the detectors look at."""


# ---------------------------------------------------------------------------------------------------------------
# Streaming JSON

READ_CHUNK = 1024 * 1024
"""Bytes fed to the JSON parser at a time (1 MB): memory per file is this plus the largest single record."""


class _Discard:
    def send(self, value):
        pass


def _parse_error(error: Exception) -> FormatError:
    detail = " ".join(str(error).split())
    if "premature EOF" in detail or "Incomplete" in detail:
        return FormatError("the JSON ends in the middle: the file is cut off (copy or download it again)")
    return FormatError(f"malformed JSON ({detail[:100]})")


def _items(stream, prefix: str):
    """ijson.items (built in C), with parse errors turned into FormatError."""
    try:
        yield from ijson.items(stream, prefix, use_float=True)
    except ijson.JSONError as exc:
        raise _parse_error(exc) from None


def _streamed_items(stream, paths: tuple[tuple[str, ...], ...]):
    """Yield (owner, item) for every item of the JSON lists at `paths` in a top-level object, while the file is read.

    A path such as ("chats", "list", "*", "messages") names the "messages" list of each item of chats.list; the
    owner is the object holding that list (a Telegram chat, with its name and type). ijson builds the document in C;
    after each chunk, the finished items are handed out and removed from it, so memory stays flat in the file size.
    """
    if _first_byte(stream) != b"{":
        raise FormatError("expected a JSON object ({...}) at the top")
    root: list[dict] = []

    def new_map() -> dict:
        made: dict = {}
        if not root:
            root.append(made)
        return made

    parser = ijson.items_coro(_Discard(), "", map_type=new_map, use_float=True)
    try:
        while chunk := stream.read(READ_CHUNK):
            parser.send(chunk)
            for path in paths:
                yield from _drain(root[0] if root else None, path, done=False)
        parser.close()
    except ijson.JSONError as exc:
        raise _parse_error(exc) from None
    for path in paths:
        yield from _drain(root[0] if root else None, path, done=True)


def _drain(node, path: tuple[str, ...], done: bool):
    """Hand out and remove the finished items under `node` along `path`; `done` says node itself is finished.

    Only the last item of a list can still be growing: every item before it is complete.
    """
    if path[0] == "*":
        if not isinstance(node, list):
            return
        finished = len(node) if done else max(len(node) - 1, 0)
        for owner in node[:finished]:
            yield from _drain(owner, path[1:], done=True)
        if not done and node:
            yield from _drain(node[-1], path[1:], done=False)
        del node[:finished]
        return
    if not isinstance(node, dict) or path[0] not in node:
        return
    child = node[path[0]]
    if len(path) > 1:
        yield from _drain(child, path[1:], done)
        return
    if not isinstance(child, list):
        return
    finished = len(child) if done else max(len(child) - 1, 0)
    for item in child[:finished]:
        yield node, item
    del child[:finished]


def _records(stream, notes: list[str]) -> Iterator[object]:
    """The records of a JSON list, a single JSON object, or a JSON Lines file; None for a line that is not JSON."""
    first = _first_byte(stream)
    if first == b"[":
        yield from _items(stream, "item")
        return
    bad_lines, first_line = 0, True
    for raw in stream:
        line = raw.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
            first_line = False
        except (ValueError, RecursionError):
            if first_line:
                # Not JSON Lines but one pretty-printed object.
                stream.seek(0)
                _skip_bom(stream)
                yield from _items(stream, "")
                return
            bad_lines += 1
            yield None
    if bad_lines:
        notes.append(f"{bad_lines} lines are not valid JSON (counted as malformed)")


def _skip_bom(stream) -> str:
    """Position the stream after a byte-order mark; return the encoding the mark implies ("" when none)."""
    head = stream.read(3)
    if head.startswith(codecs.BOM_UTF8):
        stream.seek(3)
        return "utf-8"
    if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        stream.seek(0)
        return "utf-16"
    stream.seek(0)
    return ""


def _first_byte(stream) -> bytes:
    """The first non-blank byte, leaving the stream where it was."""
    start = stream.tell()
    head = stream.read(4096).lstrip()
    stream.seek(start)
    return head[:1]


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _time_from_iso(value) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return float(calendar.timegm(moment.timetuple()))
    return moment.timestamp()


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


# ---------------------------------------------------------------------------------------------------------------
# Assistant exports: the assistant side is the learned voice.

USER_NAMES = {"user", "human", "you", "me"}
ASSISTANT_NAMES = {"assistant", "gpt", "chatgpt", "model", "bot", "bard", "bing", "claude", "ai"}


def _role_from_name(name) -> str:
    name = _text(name).strip().lower()
    if name in USER_NAMES:
        return "user"
    if name in ASSISTANT_NAMES:
        return "assistant"
    if name == "system":
        return "system"
    return ""


def parse_seed(stream, notes: list[str]) -> Iterator[Message]:
    """The original project's JSON: a list of {"sender": "User", "userInput": ...} and
    {"sender": "Claude", "claudeOutputText": ...}, or a single such object; one conversation per file."""
    for record in _records(stream, notes):
        if not isinstance(record, dict):
            yield Message("conversation", "", "", skip="malformed")
            continue
        role = "user" if _role_from_name(record.get("sender")) == "user" else "assistant"
        text = record.get("userInput") if role == "user" else record.get("claudeOutputText")
        if not isinstance(text, str):
            text = record.get("text")
        yield Message("conversation", role, _text(text))


def parse_instruction(stream, notes: list[str]) -> Iterator[Message]:
    """Alpaca-like pairs: {"instruction", "input"?, "output"}; each pair is one conversation of two messages."""
    for number, record in enumerate(_records(stream, notes)):
        key = f"#{number}"
        if not isinstance(record, dict):
            yield Message(key, "", "", skip="malformed")
            continue
        prompt = _text(record.get("instruction")).strip()
        extra = _text(record.get("input")).strip()
        yield Message(key, "user", f"{prompt}\n\n{extra}" if prompt and extra else prompt or extra)
        yield Message(key, "assistant", _text(record.get("output")))


def parse_sharegpt(stream, notes: list[str]) -> Iterator[Message]:
    """ShareGPT: {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}, as a list or JSON Lines."""
    for number, record in enumerate(_records(stream, notes)):
        turns = record.get("conversations") if isinstance(record, dict) else None
        key = str(record.get("id") or f"#{number}") if isinstance(record, dict) else f"#{number}"
        if not isinstance(turns, list):
            yield Message(key, "", "", skip="malformed")
            continue
        for turn in turns:
            if not isinstance(turn, dict):
                yield Message(key, "", "", skip="malformed")
                continue
            role = _role_from_name(turn.get("from") or turn.get("role"))
            yield Message(key, role, _text(turn.get("value")), skip="" if role else "unknown_role")


def _content_text(content) -> tuple[str, bool]:
    """Text of an OpenAI-style content: a string or a list of parts. Also says whether non-text parts were there."""
    if isinstance(content, str):
        return content, False
    if not isinstance(content, list):
        return "", content is not None
    texts, other = [], False
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str) and part.get("type", "text") == "text":
            texts.append(part["text"])
        else:
            other = True
    return "\n".join(texts), other


def parse_messages(stream, notes: list[str]) -> Iterator[Message]:
    """OpenAI / Hugging Face chat records: {"messages": [{"role", "content": str | [parts]}]}, usually JSON Lines."""
    for number, record in enumerate(_records(stream, notes)):
        turns = record.get("messages") if isinstance(record, dict) else None
        key = f"#{number}"
        if not isinstance(turns, list):
            yield Message(key, "", "", skip="malformed")
            continue
        for turn in turns:
            if not isinstance(turn, dict):
                yield Message(key, "", "", skip="malformed")
                continue
            role = _text(turn.get("role"))
            text, had_media = _content_text(turn.get("content"))
            if role in ("tool", "function", "ipython") or turn.get("tool_calls"):
                yield Message(key, role, text, skip="tool")
            elif role not in ("system", "user", "assistant"):
                yield Message(key, role, text, skip="unknown_role")
            else:
                yield Message(key, role, text, skip="media_only" if had_media and not text.strip() else "")


def _chatgpt_message(message: dict, key: str) -> Message:
    author = message.get("author") if isinstance(message.get("author"), dict) else {}
    role = _text(author.get("role"))
    content = message.get("content") if isinstance(message.get("content"), dict) else {}
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    kind = _text(content.get("content_type"))
    time = _number(message.get("create_time"))
    if metadata.get("is_visually_hidden_from_conversation") or kind == "user_editable_context":
        return Message(key, role, "", time=time, skip="hidden")
    if role == "tool" or message.get("recipient", "all") not in ("all", None) or kind in ("code", "execution_output"):
        return Message(key, role, "", time=time, skip="tool")
    if role not in ("system", "user", "assistant"):
        return Message(key, role, "", time=time, skip="unknown_role")
    if kind not in ("text", "multimodal_text"):
        return Message(key, role, "", time=time, skip="not_text")
    parts = content.get("parts") if isinstance(content.get("parts"), list) else []
    text = "\n".join(p for p in parts if isinstance(p, str))
    media = any(not isinstance(p, str) for p in parts)
    return Message(key, role, text, time=time, skip="media_only" if media and not text.strip() else "")


def parse_chatgpt(stream, notes: list[str]) -> Iterator[Message]:
    """ChatGPT's conversations.json. The kept thread is the path from `current_node` up to the root; messages on
    regenerated or edited branches are yielded after it with skip="other_branch"."""
    for number, conversation in enumerate(_records(stream, notes)):
        if not isinstance(conversation, dict) or not isinstance(conversation.get("mapping"), dict):
            yield Message(f"#{number}", "", "", skip="malformed")
            continue
        key = str(conversation.get("id") or conversation.get("conversation_id") or f"#{number}")
        mapping = {k: v for k, v in conversation["mapping"].items() if isinstance(v, dict)}
        node = conversation.get("current_node")
        if not isinstance(node, str) or node not in mapping:
            # Older exports lack current_node: take the newest message's thread.
            times = [(_number((n.get("message") or {}).get("create_time") if isinstance(n.get("message"), dict)
                              else None) or 0.0, k) for k, n in mapping.items()]
            node = max(times)[1] if times else None
            notes.append(f"conversation {key} has no current_node; used the newest message's thread")
        thread, seen = [], set()
        while isinstance(node, str) and node in mapping and node not in seen:
            seen.add(node)
            thread.append(node)
            node = mapping[node].get("parent")
        for node in reversed(thread):
            if isinstance(mapping[node].get("message"), dict):
                yield _chatgpt_message(mapping[node]["message"], key)
        for node, entry in mapping.items():
            if node not in seen and isinstance(entry.get("message"), dict):
                yield Message(key, "", "", skip="other_branch")


def parse_claude(stream, notes: list[str]) -> Iterator[Message]:
    """Claude.ai's conversations.json: [{uuid, name, chat_messages: [{sender, text, content, attachments, files}]}]."""
    for number, conversation in enumerate(_records(stream, notes)):
        messages = conversation.get("chat_messages") if isinstance(conversation, dict) else None
        if not isinstance(messages, list):
            yield Message(f"#{number}", "", "", skip="malformed")
            continue
        key = str(conversation.get("uuid") or f"#{number}")
        for message in messages:
            if not isinstance(message, dict):
                yield Message(key, "", "", skip="malformed")
                continue
            role = _role_from_name(message.get("sender"))
            blocks = message.get("content") if isinstance(message.get("content"), list) else []
            text = _text(message.get("text"))
            if not text.strip():
                text = "\n".join(_text(b.get("text")) for b in blocks
                                 if isinstance(b, dict) and b.get("type") == "text")
            # Attached documents go first, so trimming an over-long prompt cuts them before the question.
            attachments = message.get("attachments") if isinstance(message.get("attachments"), list) else []
            attached = [
                f"[{_text(a.get('file_name')) or 'attachment'}]\n{a['extracted_content']}"
                for a in attachments if isinstance(a, dict) and _text(a.get("extracted_content")).strip()
            ]
            if attached and role == "user":
                text = "\n\n".join(attached + [text])
            time = _time_from_iso(message.get("created_at"))
            skip = "" if role else "unknown_role"
            if not skip and not text.strip():
                if any(isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result") for b in blocks):
                    skip = "tool"
                elif message.get("files") or message.get("attachments"):
                    skip = "media_only"
            yield Message(key, role, text, time=time, skip=skip)


# ---------------------------------------------------------------------------------------------------------------
# Messenger exports: `me` is the learned voice.

TELEGRAM_GROUP_TYPES = {"private_group", "private_supergroup", "public_supergroup", "private_channel", "public_channel"}
TELEGRAM_MEDIA_KEYS = ("media_type", "photo", "file", "sticker_emoji", "poll", "location_information",
                       "contact_information", "game_title", "invoice_information")
TELEGRAM_LISTS = (("messages",), ("chats", "list", "*", "messages"), ("left_chats", "list", "*", "messages"))


def _telegram_text(value) -> str:
    """`text` is a string or a list of strings and entity objects ({"type": "link", "text": ...})."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p if isinstance(p, str) else _text(p.get("text")) if isinstance(p, dict) else "" for p in value)
    return ""


def _telegram_message(message, chat: dict) -> Message:
    key = f"{_text(chat.get('name')) or 'chat'} [{chat.get('id', '')}]"
    group = _text(chat.get("type")) in TELEGRAM_GROUP_TYPES
    if not isinstance(message, dict):
        return Message(key, "", "", skip="malformed", group=group)
    text = _telegram_text(message.get("text"))
    time = _number(message.get("date_unixtime"))
    if time is None:
        time = _time_from_iso(message.get("date"))
    skip = ""
    if message.get("type", "message") != "message":
        skip = "service"
    elif chat.get("type") == "bot_chat" or message.get("via_bot"):
        skip = "bot"
    elif not text.strip():
        skip = "media_only" if any(k in message for k in TELEGRAM_MEDIA_KEYS) else "empty"
    return Message(
        key, "", text,
        speaker=_text(message.get("from")) or _text(message.get("actor")),
        speaker_id=str(message.get("from_id") or message.get("actor_id") or ""),
        time=time, skip=skip, group=group, forwarded=bool(message.get("forwarded_from")),
    )


TELEGRAM_CHAT_KEYS = {"chats", "left_chats", "messages"}
"""Top-level keys of result.json after which personal_information can no longer come (Telegram writes it first)."""


def telegram_owner(stream) -> tuple[str, str] | None:
    """(name, id) of the account that made a full Telegram Desktop export, from its personal_information; None for
    a one-chat export. Reads only the head of the file: Telegram writes personal_information before the chats."""
    _skip_bom(stream)
    if _first_byte(stream) != b"{":
        return None
    info: dict = {}
    try:
        for prefix, event, value in ijson.parse(stream):
            if prefix == "" and event == "map_key" and value in TELEGRAM_CHAT_KEYS:
                break
            if prefix.startswith("personal_information.") and event in ("number", "string"):
                info[prefix.split(".", 1)[1]] = value
            elif prefix == "personal_information" and event == "end_map":
                break
    except ijson.JSONError:
        return None  # the main pass reports the broken file
    if not info.get("user_id"):
        return None
    name = " ".join(_text(info.get(k)) for k in ("first_name", "last_name") if _text(info.get(k)))
    return name, str(info["user_id"])


def parse_telegram(stream, notes: list[str]) -> Iterator[Message]:
    """Telegram Desktop's result.json: one chat ({name, type, id, messages}) or a full export ({chats: {list}})."""
    for chat, message in _streamed_items(stream, TELEGRAM_LISTS):
        yield _telegram_message(message, chat)


DISCORD_TEXT_TYPES = {"Default", "Reply"}


def parse_discord(stream, notes: list[str]) -> Iterator[Message]:
    """DiscordChatExporter JSON: {guild, channel, messages: [{type, timestamp, content, author, attachments}]}."""
    for export, value in _streamed_items(stream, (("messages",),)):
        guild = export.get("guild") if isinstance(export.get("guild"), dict) else {}
        channel = export.get("channel") if isinstance(export.get("channel"), dict) else {}
        key = f"{_text(guild.get('name'))} #{_text(channel.get('name'))} [{channel.get('id', '')}]"
        group = channel.get("type") != "DirectTextChat"
        if not isinstance(value, dict):
            yield Message(key, "", "", skip="malformed", group=group)
            continue
        author = value.get("author") if isinstance(value.get("author"), dict) else {}
        text = _text(value.get("content"))
        skip = ""
        if _text(value.get("type", "Default")) not in DISCORD_TEXT_TYPES:
            skip = "service"
        elif author.get("isBot"):
            skip = "bot"
        elif not text.strip():
            skip = "media_only" if value.get("attachments") or value.get("embeds") or value.get("stickers") else "empty"
        yield Message(
            key, "", text,
            speaker=_text(author.get("nickname")) or _text(author.get("name")),
            speaker_id=str(author.get("id") or ""), login=_text(author.get("name")),
            time=_time_from_iso(value.get("timestamp")), skip=skip, group=group,
        )


# One line starts each WhatsApp message. Android: "12/31/23, 9:41 PM - Name: text", "31.12.23, 21:41 - Name: text";
# iOS: "[31.12.23, 21:41:05] Name: text". Newer exports put U+202F (narrow space) before AM/PM.
WHATSAPP_LINE = re.compile(
    r"^\[?(?P<date>\d{1,4}[./-]\d{1,2}[./-]\d{1,4}),?\s(?P<time>\d{1,2}[:.]\d{2}(?:[:.]\d{2})?)"
    r"(?:\s?(?P<ampm>[AaPp]\.?\s?[Mm]\.?))?(?:\]\s| - )(?P<rest>.*)$"
)
WHATSAPP_MEDIA = re.compile(
    r"^(?:<(?:Media omitted|Медиа отсутствуют|Медиафайл отсутствует|Медиафайл опущен|attached: [^>]*)>"
    r"|(?:image|video|audio|sticker|GIF|document|Contact card) omitted"
    r"|(?:изображение|видео|аудио|стикер|GIF|документ) отсутствует"
    r"|.*\(file attached\))$",
    re.IGNORECASE,
)
WHATSAPP_DELETED = re.compile(
    r"^(?:This message was deleted|You deleted this message|Данное сообщение удалено|Это сообщение удалено"
    r"|Вы удалили это сообщение)\.?$",
    re.IGNORECASE,
)
WHATSAPP_EDITED = re.compile(r"\s*<(?:This message was edited|Сообщение изменено|Изменено)>$", re.IGNORECASE)
_INVISIBLE = dict.fromkeys(map(ord, "\u200e\u200f\ufeff"), None)


def _decoded_lines(stream, notes: list[str]) -> io.TextIOWrapper:
    """A text view of the stream: UTF-8 (with or without BOM), UTF-16 with BOM, or else Windows-1251."""
    encoding = _skip_bom(stream)
    if not encoding:
        head = stream.read(1024 * 1024)
        stream.seek(0)
        encoding = utf8_or_cp1251(head, notes, "not UTF-8; read as Windows-1251 (Cyrillic)")
    return io.TextIOWrapper(stream, encoding=encoding, errors="replace", newline=None)


def _whatsapp_header(line: str):
    # Only the marks in front of the date go; iOS marks system lines and media with U+200E in the text itself.
    line = line.lstrip("\u200e\u200f\ufeff").replace("\u202f", " ").replace("\u00a0", " ")
    return WHATSAPP_LINE.match(line)


def _whatsapp_time(match, day_first: bool) -> float | None:
    date = re.split(r"[./-]", match["date"])
    parts = [int(p) for p in date]
    if len(date[0]) == 4:
        year, month, day = parts
    elif day_first:
        day, month, year = parts
    else:
        month, day, year = parts
    year += 2000 if year < 100 else 0
    clock = [int(p) for p in re.split(r"[:.]", match["time"])]
    hour, minute, second = clock[0], clock[1], clock[2] if len(clock) > 2 else 0
    if match["ampm"]:
        hour = hour % 12 + (12 if match["ampm"][0] in "Pp" else 0)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 62):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def parse_whatsapp(stream, notes: list[str]) -> Iterator[Message]:
    """WhatsApp's "Export chat" .txt (Android and iOS, US and RU/EU dates, 12/24-hour clocks).

    Reads the file twice: first to learn the date order (31.12 vs 12/31) and whether it is a group chat.
    """
    text = _decoded_lines(stream, notes)
    speakers, first_max, second_max, dots = set(), 0, 0, False
    for line in text:
        match = _whatsapp_header(line)
        if match:
            first, second = (int(p) for p in re.split(r"[./-]", match["date"])[:2])
            first_max, second_max = max(first_max, first), max(second_max, second)
            dots = dots or "." in match["date"]
            name, sep, _ = match["rest"].partition(": ")
            if sep:
                speakers.add(name)
    # Day first when a first field exceeds 12, or with dotted dates (RU/EU); month first for US slashes.
    day_first = first_max > 12 or (second_max <= 12 and dots)
    group = len(speakers) > 2
    text.detach()
    stream.seek(0)
    text = _decoded_lines(stream, [])
    current: Message | None = None
    for line in text:
        line = line.rstrip("\n")
        match = _whatsapp_header(line)
        if match is None:
            if current is None:
                current = Message("chat", "", "", skip="service", group=group)
            current.text += "\n" + line
            continue
        if current is not None:
            yield _finish_whatsapp(current)
        name, sep, body = match["rest"].partition(": ")
        time = _whatsapp_time(match, day_first)
        if sep:
            current = Message("chat", "", body, speaker=name.strip(), time=time, group=group)
        else:
            current = Message("chat", "", match["rest"], time=time, skip="service", group=group)
    if current is not None:
        yield _finish_whatsapp(current)


def _finish_whatsapp(message: Message) -> Message:
    marked = message.text.lstrip(" ").startswith("\u200e")
    message.text = WHATSAPP_EDITED.sub("", message.text.translate(_INVISIBLE).strip())
    if message.skip:
        return message
    if WHATSAPP_MEDIA.match(message.text):
        message.skip = "media_only"
    elif WHATSAPP_DELETED.match(message.text):
        message.skip = "deleted"
    elif marked:
        message.skip = "service"  # iOS puts the encryption notice and similar lines under the chat's name
    elif not message.text:
        message.skip = "empty"
    return message


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
                text = head.decode("utf-8" if _mostly_utf8(head) else "cp1251", errors="replace")
        lines = [line for line in text.splitlines() if line.strip()][:30]
        return "whatsapp" if any(_whatsapp_header(line) for line in lines) else ""
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


def _mostly_utf8(head: bytes) -> bool:
    """A head cut in the middle of a UTF-8 character still counts as UTF-8."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return True
    except UnicodeDecodeError:
        return False


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
        encoding = _skip_bom(stream)
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
