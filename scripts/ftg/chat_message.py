"""What every chat parser yields (`Message`) and the one error it may raise (`FormatError`), and the two byte-level
helpers the text readers share (utf8_or_cp1251, skip_bom).

Kept apart from chat_formats.py so that the parsers split by family (formats_*.py) and the table of formats in
chat_formats.py can all import it without a cycle.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

OWNER_ID = "owner"
"""speaker_id of a message the export itself marks as the account owner's (VK's "Вы"); `--me owner` matches it."""


class FormatError(Exception):
    """The file is not valid in its format (malformed JSON, cut off, not text). The message says where."""


@dataclass(slots=True)
class Message:
    conversation: str
    """Key of the chat or conversation inside the file."""
    role: str
    """user/assistant/system for assistant exports; "" for messengers, where `me` decides."""
    text: str
    speaker: str = ""
    """Display name (messengers)."""
    speaker_id: str = ""
    """Account id (messengers), e.g. Telegram's "user123456"."""
    login: str = ""
    """Second name that `me` may match (Discord user name)."""
    aliases: tuple[str, ...] = ()
    """Further names and ids of the same person that `me` may match (Slack's real and display names, VK's bare
    number); never shown, so the participants table stays as it is."""
    time: float | None = None
    """Unix seconds; splits messenger history into conversations."""
    skip: str = ""
    """Why this message cannot be used; "" when it can."""
    group: bool = False
    """Sent in a group chat: other speakers' names prefix their lines."""
    forwarded: bool = False
    """Forwarded from elsewhere: context from others, never the voice of `me`."""


def utf8_or_cp1251(head: bytes, notes: list[str], note: str) -> str:
    """'utf-8' when `head` (the start of a file, possibly cut mid-character) decodes as UTF-8, else 'cp1251' (the
    Russian Windows code page of old exports), with `note` added to the file's notes."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        notes.append(note)
        return "cp1251"


def skip_bom(stream) -> str:
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
