"""From a file's messages to turns: conversations (a new chat, or a messenger silence longer than the session gap),
whose side each message is on (`me` against a message's names and ids), and one side's consecutive messages merged
into one turn."""

from __future__ import annotations

from dataclasses import dataclass

from ftg.chat_message import Message
from ftg.prepare_report import Totals
from ftg.text_cleaning import clean_text


@dataclass
class Turn:
    role: str
    text: str
    messages: int = 1
    speaker: str = ""
    used: bool = False
    reason: str = ""
    """Why its messages were not used, when they were not."""


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
