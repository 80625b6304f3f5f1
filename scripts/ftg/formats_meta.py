"""Reader for Meta's "Download your information" chats: Facebook Messenger and Instagram, JSON.

A thread is a folder, messages/inbox/<thread>/ (Instagram: your_instagram_activity/messages/inbox/<thread>/), of
message_1.json, message_2.json, ...: message_1 holds the newest messages, and each file lists its messages newest
first. The stage hands a thread's files as one stream, oldest file first (chat_formats.chat_parts); each file is
sorted by time here, which also serves the newer end-to-end-encrypted export (senderName, text, timestamp).

Meta writes every non-ASCII string as mojibake: the UTF-8 bytes of "Привет" arrive as the code points
"ÐŸÑ€Ð¸Ð²ÐµÑ‚". `repair_mojibake` turns them back, and leaves text that is already right alone.
"""

from __future__ import annotations

import re
from typing import Iterator

import ijson

from ftg.chat_message import FormatError, Message

SERVICE_TYPES = {"call", "subscribe", "unsubscribe", "payment", "pending"}
"""Classic `type` values that are events, not words (Generic and Share are messages)."""
MEDIA_KEYS = ("photos", "videos", "audio_files", "gifs", "files", "sticker", "media")
REACTION = re.compile(r"^(?:Reacted .+ to your message|Liked a message|.+ reacted .+ to your message)$")
ATTACHMENT = re.compile(r"^(?:You|.+) sent an attachment\.$")


def repair_mojibake(text: str) -> str:
    """The text with Meta's mojibake undone: code points below 256 that spell UTF-8 bytes become the characters.

    Text that holds a character above U+00FF, or whose low code points are not valid UTF-8 as bytes ("café",
    "naïve"), is returned unchanged: it was never mojibake.
    """
    if text.isascii():
        return text
    # Meta writes the bytes as \u0080-\u00ff (latin-1); the same text pasted from a Windows viewer shows them as
    # Windows-1252 ("ÐŸÑ€Ð¸Ð²ÐµÑ‚"), so that is tried second.
    for encoding in ("latin-1", "cp1252"):
        try:
            return text.encode(encoding).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
    return text


def _fixed(value) -> str:
    return repair_mojibake(value) if isinstance(value, str) else ""


def _participants(document: dict) -> list[str]:
    people = document.get("participants") if isinstance(document.get("participants"), list) else []
    return [name for name in (_fixed(p.get("name")) if isinstance(p, dict) else _fixed(p) for p in people) if name]


def _documents(stream) -> Iterator[object]:
    try:
        yield from ijson.items(stream, "", multiple_values=True, use_float=True)
    except ijson.JSONError as exc:
        detail = " ".join(str(exc).split())
        if "premature EOF" in detail or "Incomplete" in detail:
            raise FormatError("the JSON ends in the middle: the file is cut off (download it again)") from None
        raise FormatError(f"malformed JSON ({detail[:100]})") from None


def _meta_message(message, key: str, group: bool) -> Message:
    if not isinstance(message, dict):
        return Message(key, "", "", skip="malformed", group=group)
    e2ee = "senderName" in message
    speaker = _fixed(message.get("senderName" if e2ee else "sender_name"))
    text = _fixed(message.get("text" if e2ee else "content"))
    stamp = message.get("timestamp" if e2ee else "timestamp_ms")
    time = stamp / 1000 if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else None
    kind = _fixed(message.get("type")).lower()
    skip = ""
    if message.get("is_unsent") or message.get("isUnsent"):
        skip = "deleted"
    elif kind in SERVICE_TYPES or message.get("call_duration") is not None or REACTION.match(text):
        skip = "service"
    elif ATTACHMENT.match(text) or (not text.strip() and any(message.get(k) for k in MEDIA_KEYS)):
        skip = "media_only"
    elif not text.strip():
        skip = "empty"
    return Message(key, "", text, speaker=speaker, time=time, skip=skip, group=group)


def parse_meta(stream, notes: list[str]) -> Iterator[Message]:
    """Messenger/Instagram thread files laid end to end, oldest file first; each is put in time order."""
    for document in _documents(stream):
        if not isinstance(document, dict) or not isinstance(document.get("messages"), list):
            yield Message("thread", "", "", skip="malformed")
            continue
        key = (_fixed(document.get("title")) or _fixed(document.get("threadName"))
               or _fixed(document.get("thread_path")) or "thread")
        group = len(_participants(document)) > 2
        messages = [_meta_message(m, key, group) for m in document["messages"]]
        messages.sort(key=lambda m: m.time if m.time is not None else float("-inf"))  # stable: ties keep order
        yield from messages


def meta_owner(stream) -> tuple[str, str] | None:
    """(name, name) of the account that downloaded a two-person thread: the participant the thread is not named
    after (its title, or its folder in thread_path). None for a group thread or when that does not single one out."""
    try:
        document = next(_documents(stream), None)
    except FormatError:
        return None  # the main pass reports the broken file
    if not isinstance(document, dict):
        return None
    people = _participants(document)
    if len(set(people)) != 2:
        return None
    title = (_fixed(document.get("title")) or _fixed(document.get("threadName"))).casefold()
    folder = _fixed(document.get("thread_path")).rsplit("/", 1)[-1].rsplit("_", 1)[0]
    others = [p for p in people
              if p.casefold() == title or (folder and re.sub(r"\W", "", p).casefold() == folder.casefold())]
    owners = [p for p in people if p not in others]
    return (owners[0], owners[0]) if len(owners) == 1 else None
