"""Readers for the assistant exports, where the assistant side is the learned voice: the original seed JSON,
instruction pairs, ShareGPT, OpenAI/HF "messages" records, ChatGPT's and Claude.ai's conversations.json."""

from __future__ import annotations

from typing import Iterator

from ftg.chat_message import Message
from ftg.formats_json import as_number, as_text, records, time_from_iso

USER_NAMES = {"user", "human", "you", "me"}
ASSISTANT_NAMES = {"assistant", "gpt", "chatgpt", "model", "bot", "bard", "bing", "claude", "ai"}


def _role_from_name(name) -> str:
    name = as_text(name).strip().lower()
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
    for record in records(stream, notes):
        if not isinstance(record, dict):
            yield Message("conversation", "", "", skip="malformed")
            continue
        role = "user" if _role_from_name(record.get("sender")) == "user" else "assistant"
        text = record.get("userInput") if role == "user" else record.get("claudeOutputText")
        if not isinstance(text, str):
            text = record.get("text")
        yield Message("conversation", role, as_text(text))


def parse_instruction(stream, notes: list[str]) -> Iterator[Message]:
    """Alpaca-like pairs: {"instruction", "input"?, "output"}; each pair is one conversation of two messages."""
    for number, record in enumerate(records(stream, notes)):
        key = f"#{number}"
        if not isinstance(record, dict):
            yield Message(key, "", "", skip="malformed")
            continue
        prompt = as_text(record.get("instruction")).strip()
        extra = as_text(record.get("input")).strip()
        yield Message(key, "user", f"{prompt}\n\n{extra}" if prompt and extra else prompt or extra)
        yield Message(key, "assistant", as_text(record.get("output")))


def _record_turns(stream, notes: list[str], field: str, key_of) -> Iterator[tuple[str, dict | None]]:
    """(conversation key, turn) for each turn dict under record[field] of a list or JSON Lines file; turn is None
    for a record without such a list, or a turn that is not a dict (the caller reports it as malformed)."""
    for number, record in enumerate(records(stream, notes)):
        turns = record.get(field) if isinstance(record, dict) else None
        key = key_of(record, number) if isinstance(record, dict) else f"#{number}"
        if not isinstance(turns, list):
            yield key, None
            continue
        for turn in turns:
            yield key, turn if isinstance(turn, dict) else None


def parse_sharegpt(stream, notes: list[str]) -> Iterator[Message]:
    """ShareGPT: {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}, as a list or JSON Lines."""
    for key, turn in _record_turns(stream, notes, "conversations", lambda r, n: str(r.get("id") or f"#{n}")):
        if turn is None:
            yield Message(key, "", "", skip="malformed")
            continue
        role = _role_from_name(turn.get("from") or turn.get("role"))
        yield Message(key, role, as_text(turn.get("value")), skip="" if role else "unknown_role")


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
    for key, turn in _record_turns(stream, notes, "messages", lambda r, n: f"#{n}"):
        if turn is None:
            yield Message(key, "", "", skip="malformed")
            continue
        role = as_text(turn.get("role"))
        text, had_media = _content_text(turn.get("content"))
        if role in ("tool", "function", "ipython") or turn.get("tool_calls"):
            yield Message(key, role, text, skip="tool")
        elif role not in ("system", "user", "assistant"):
            yield Message(key, role, text, skip="unknown_role")
        else:
            yield Message(key, role, text, skip="media_only" if had_media and not text.strip() else "")


def _chatgpt_message(message: dict, key: str) -> Message:
    author = message.get("author") if isinstance(message.get("author"), dict) else {}
    role = as_text(author.get("role"))
    content = message.get("content") if isinstance(message.get("content"), dict) else {}
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    kind = as_text(content.get("content_type"))
    time = as_number(message.get("create_time"))
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
    for number, conversation in enumerate(records(stream, notes)):
        if not isinstance(conversation, dict) or not isinstance(conversation.get("mapping"), dict):
            yield Message(f"#{number}", "", "", skip="malformed")
            continue
        key = str(conversation.get("id") or conversation.get("conversation_id") or f"#{number}")
        mapping = {k: v for k, v in conversation["mapping"].items() if isinstance(v, dict)}
        node = conversation.get("current_node")
        if not isinstance(node, str) or node not in mapping:
            # Older exports lack current_node: take the newest message's thread.
            times = [(as_number((n.get("message") or {}).get("create_time") if isinstance(n.get("message"), dict)
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
    for number, conversation in enumerate(records(stream, notes)):
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
            text = as_text(message.get("text"))
            if not text.strip():
                text = "\n".join(as_text(b.get("text")) for b in blocks
                                 if isinstance(b, dict) and b.get("type") == "text")
            # Attached documents go first, so trimming an over-long prompt cuts them before the question.
            attachments = message.get("attachments") if isinstance(message.get("attachments"), list) else []
            attached = [
                f"[{as_text(a.get('file_name')) or 'attachment'}]\n{a['extracted_content']}"
                for a in attachments if isinstance(a, dict) and as_text(a.get("extracted_content")).strip()
            ]
            if attached and role == "user":
                text = "\n\n".join(attached + [text])
            time = time_from_iso(message.get("created_at"))
            skip = "" if role else "unknown_role"
            if not skip and not text.strip():
                if any(isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result") for b in blocks):
                    skip = "tool"
                elif message.get("files") or message.get("attachments"):
                    skip = "media_only"
            yield Message(key, role, text, time=time, skip=skip)
