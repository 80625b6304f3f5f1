"""Reader for a Slack workspace export (Workspace settings -> Import/Export data -> Export).

The export is a zip of users.json, channels.json and a folder per channel holding one JSON list of messages per
day (general/2020-01-12.json). The stage hands a channel as one stream: users.json first, when the export has it,
then the days in order (chat_formats.chat_parts). User ids become names, and Slack's markup becomes plain text:
<@U123> -> @Name, <#C1|general> -> #general, <https://x|label> -> label, <!here> -> @here.
"""

from __future__ import annotations

import html
import re
from typing import Iterator

import ijson

from ftg.chat_message import FormatError, Message

TEXT_SUBTYPES = {"", "thread_broadcast", "file_share", "me_message"}
"""Subtypes that are someone's own words; every other subtype (channel_join, channel_topic, ...) is an event."""
MARKUP = re.compile(r"<([@#!]?)([^<>|]*)(?:\|([^<>]*))?>")


def _str(value) -> str:
    return value if isinstance(value, str) else ""


def _user_name(user: dict) -> str:
    profile = user.get("profile") if isinstance(user.get("profile"), dict) else {}
    return (_str(profile.get("display_name")) or _str(profile.get("real_name")) or _str(user.get("real_name"))
            or _str(user.get("name")))


def _user_aliases(user: dict) -> tuple[str, ...]:
    """Every name `me` may give for a Slack user: handle, real name and display name (users.json or user_profile)."""
    profile = user.get("profile") if isinstance(user.get("profile"), dict) else {}
    found = (_str(user.get("name")), _str(user.get("real_name")), _str(profile.get("real_name")),
             _str(profile.get("display_name")))
    return tuple(dict.fromkeys(name for name in found if name))


def slack_text(text: str, names: dict[str, str]) -> str:
    """Plain text of a Slack message: mentions, channels and links resolved, &amp; &lt; &gt; decoded."""
    def resolve(match: re.Match) -> str:
        sigil, target, label = match[1], match[2], match[3]
        if sigil == "@":
            return "@" + (names.get(target) or label or target)
        if sigil == "#":
            return "#" + (label or target)
        if sigil == "!":
            return (label or "@" + target.split("^", 1)[0]) if label else "@" + target
        return label or target.removeprefix("mailto:")
    return html.unescape(MARKUP.sub(resolve, text))


def parse_slack(stream, notes: list[str]) -> Iterator[Message]:
    """A channel of a Slack export: users.json (when present) and the channel's daily files, laid end to end."""
    names: dict[str, str] = {}
    handles: dict[str, str] = {}
    aliases: dict[str, tuple[str, ...]] = {}
    try:
        for item in ijson.items(stream, "item", multiple_values=True, use_float=True):
            if not isinstance(item, dict):
                yield Message("channel", "", "", skip="malformed", group=True)
                continue
            if "ts" not in item and isinstance(item.get("id"), str):
                names[item["id"]] = _user_name(item)  # a users.json entry
                handles[item["id"]] = _str(item.get("name"))
                aliases[item["id"]] = _user_aliases(item)
                continue
            yield _slack_message(item, names, handles, aliases)
    except ijson.JSONError as exc:
        detail = " ".join(str(exc).split())
        if "premature EOF" in detail or "Incomplete" in detail:
            raise FormatError("the JSON ends in the middle: a file is cut off (export again)") from None
        raise FormatError(f"malformed JSON ({detail[:100]})") from None


def _slack_message(item: dict, names: dict[str, str], handles: dict[str, str],
                   aliases: dict[str, tuple[str, ...]]) -> Message:
    user = _str(item.get("user"))
    profile = item.get("user_profile") if isinstance(item.get("user_profile"), dict) else {}
    speaker = (names.get(user) or _str(profile.get("display_name")) or _str(profile.get("real_name"))
               or _str(item.get("username")) or user)
    try:
        time = float(item.get("ts"))
    except (TypeError, ValueError):
        time = None
    subtype = _str(item.get("subtype"))
    text = slack_text(_str(item.get("text")), names)
    skip = ""
    if item.get("type", "message") != "message":
        skip = "service"
    elif item.get("bot_id") or subtype == "bot_message":
        skip = "bot"
    elif subtype in ("tombstone", "message_deleted"):
        skip = "deleted"
    elif subtype not in TEXT_SUBTYPES:
        skip = "service"  # joins, leaves, topic and purpose changes, pins
    elif not text.strip():
        skip = "media_only" if item.get("files") or item.get("attachments") else "empty"
    return Message("channel", "", text, speaker=speaker, speaker_id=user,
                   login=handles.get(user) or _str(profile.get("name")),
                   aliases=aliases.get(user) or _user_aliases({"name": profile.get("name"), "profile": profile}),
                   time=time, skip=skip, group=True)
