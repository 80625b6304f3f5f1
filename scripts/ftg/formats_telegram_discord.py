"""Readers for the JSON messenger exports, where `me` is the learned voice: Telegram Desktop's result.json (one chat
or a full export) and DiscordChatExporter JSON. Both are read while streaming (formats_json.streamed_items)."""

from __future__ import annotations

from typing import Iterator

import ijson

from ftg.chat_message import Message, skip_bom
from ftg.formats_json import as_number, as_text, first_byte, streamed_items, time_from_iso

TELEGRAM_GROUP_TYPES = {"private_group", "private_supergroup", "public_supergroup", "private_channel", "public_channel"}
TELEGRAM_MEDIA_KEYS = ("media_type", "photo", "file", "sticker_emoji", "poll", "location_information",
                       "contact_information", "game_title", "invoice_information")
TELEGRAM_LISTS = (("messages",), ("chats", "list", "*", "messages"), ("left_chats", "list", "*", "messages"))


def _telegram_text(value) -> str:
    """`text` is a string or a list of strings and entity objects ({"type": "link", "text": ...})."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p if isinstance(p, str) else as_text(p.get("text")) if isinstance(p, dict) else ""
                       for p in value)
    return ""


def _telegram_message(message, chat: dict) -> Message:
    key = f"{as_text(chat.get('name')) or 'chat'} [{chat.get('id', '')}]"
    group = as_text(chat.get("type")) in TELEGRAM_GROUP_TYPES
    if not isinstance(message, dict):
        return Message(key, "", "", skip="malformed", group=group)
    text = _telegram_text(message.get("text"))
    time = as_number(message.get("date_unixtime"))
    if time is None:
        time = time_from_iso(message.get("date"))
    skip = ""
    if message.get("type", "message") != "message":
        skip = "service"
    elif chat.get("type") == "bot_chat" or message.get("via_bot"):
        skip = "bot"
    elif not text.strip():
        skip = "media_only" if any(k in message for k in TELEGRAM_MEDIA_KEYS) else "empty"
    return Message(
        key, "", text,
        speaker=as_text(message.get("from")) or as_text(message.get("actor")),
        speaker_id=str(message.get("from_id") or message.get("actor_id") or ""),
        time=time, skip=skip, group=group, forwarded=bool(message.get("forwarded_from")),
    )


TELEGRAM_CHAT_KEYS = {"chats", "left_chats", "messages"}
"""Top-level keys of result.json after which personal_information can no longer come (Telegram writes it first)."""


def telegram_owner(stream) -> tuple[str, str] | None:
    """(name, id) of the account that made a full Telegram Desktop export, from its personal_information; None for
    a one-chat export. Reads only the head of the file: Telegram writes personal_information before the chats."""
    skip_bom(stream)
    if first_byte(stream) != b"{":
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
    name = " ".join(as_text(info.get(k)) for k in ("first_name", "last_name") if as_text(info.get(k)))
    return name, str(info["user_id"])


def parse_telegram(stream, notes: list[str]) -> Iterator[Message]:
    """Telegram Desktop's result.json: one chat ({name, type, id, messages}) or a full export ({chats: {list}})."""
    for chat, message in streamed_items(stream, TELEGRAM_LISTS):
        yield _telegram_message(message, chat)


DISCORD_TEXT_TYPES = {"Default", "Reply"}


def parse_discord(stream, notes: list[str]) -> Iterator[Message]:
    """DiscordChatExporter JSON: {guild, channel, messages: [{type, timestamp, content, author, attachments}]}."""
    for export, value in streamed_items(stream, (("messages",),)):
        guild = export.get("guild") if isinstance(export.get("guild"), dict) else {}
        channel = export.get("channel") if isinstance(export.get("channel"), dict) else {}
        key = f"{as_text(guild.get('name'))} #{as_text(channel.get('name'))} [{channel.get('id', '')}]"
        group = channel.get("type") != "DirectTextChat"
        if not isinstance(value, dict):
            yield Message(key, "", "", skip="malformed", group=group)
            continue
        author = value.get("author") if isinstance(value.get("author"), dict) else {}
        text = as_text(value.get("content"))
        skip = ""
        if as_text(value.get("type", "Default")) not in DISCORD_TEXT_TYPES:
            skip = "service"
        elif author.get("isBot"):
            skip = "bot"
        elif not text.strip():
            skip = "media_only" if value.get("attachments") or value.get("embeds") or value.get("stickers") else "empty"
        yield Message(
            key, "", text,
            speaker=as_text(author.get("nickname")) or as_text(author.get("name")),
            speaker_id=str(author.get("id") or ""), login=as_text(author.get("name")),
            time=time_from_iso(value.get("timestamp")), skip=skip, group=group,
        )
