"""The format parsers never raise anything but FormatError, whatever the input (fuzzed with hypothesis); they
stream big files; detection picks the right parser for each hand-made export."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftg.chat_formats import MESSENGER_FORMATS, PARSERS, FormatError, detect, read_messages, telegram_owner

EXPORTS = Path(__file__).parent / "exports"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import synthetic_exports  # noqa: E402

# Keys the parsers look at, so random documents reach deep into them.
KEYS = [
    "messages", "chats", "list", "name", "type", "id", "text", "from", "from_id", "date", "date_unixtime",
    "forwarded_from", "via_bot", "photo", "mapping", "current_node", "parent", "children", "message", "author", "role",
    "content", "parts", "content_type", "metadata", "is_visually_hidden_from_conversation", "recipient", "create_time",
    "chat_messages", "sender", "attachments", "extracted_content", "files", "created_at", "uuid", "conversations",
    "value", "instruction", "input", "output", "userInput", "claudeOutputText", "guild", "channel", "isBot",
    "nickname", "timestamp", "personal_information", "left_chats",
]
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
json_values = st.recursive(
    scalars | st.sampled_from(["user", "assistant", "system", "tool", "human", "gpt", "message", "service", "text",
                               "multimodal_text", "code", "Default", "Reply", "DirectTextChat", "private_group"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), children, max_size=6),
    max_leaves=40,
)
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_all(fmt: str, data: bytes) -> list:
    try:
        return list(read_messages(fmt, io.BytesIO(data), []))
    except FormatError:
        return []


@pytest.mark.parametrize("fmt", list(PARSERS))
@FUZZ
@given(value=json_values)
def test_parsers_take_any_json_document(fmt, value):
    for message in parse_all(fmt, json.dumps(value).encode("utf-8")):
        assert isinstance(message.text, str) and isinstance(message.conversation, str)


@pytest.mark.parametrize("fmt", list(PARSERS))
@FUZZ
@given(records=st.lists(json_values, max_size=4))
def test_parsers_take_any_json_list_and_json_lines(fmt, records):
    parse_all(fmt, json.dumps(records).encode("utf-8"))
    parse_all(fmt, "\n".join(json.dumps(r) for r in records).encode("utf-8"))


@pytest.mark.parametrize("fmt", list(PARSERS))
@FUZZ
@given(data=st.binary(max_size=300))
def test_parsers_take_any_bytes(fmt, data):
    parse_all(fmt, data)
    parse_all(fmt, b"\xef\xbb\xbf" + data)


@FUZZ
@given(chats=st.lists(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5)
                      .map(lambda chat: {**chat, "messages": chat.get("messages", [])}), max_size=3),
       messages=st.lists(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8), max_size=6))
def test_telegram_parser_on_export_shaped_documents(chats, messages):
    for chat in chats:
        chat["messages"] = messages
    parse_all("telegram", json.dumps({"chats": {"list": chats}}).encode("utf-8"))
    parse_all("telegram", json.dumps({"name": "x", "type": "personal_chat", "messages": messages}).encode("utf-8"))


@FUZZ
@given(nodes=st.dictionaries(st.sampled_from(["a", "b", "c", "root"]),
                             st.fixed_dictionaries({"parent": st.sampled_from([None, "a", "b", "c", "root", 5]),
                                                    "message": json_values}), max_size=4),
       current=st.sampled_from([None, "a", "b", "missing", 3]))
def test_chatgpt_parser_on_any_tree_including_cycles(nodes, current):
    conversation = {"id": "x", "mapping": nodes, "current_node": current}
    parse_all("chatgpt", json.dumps([conversation]).encode("utf-8"))


WHATSAPP_PIECES = [
    "12/31/23, 9:41 PM - Bob: hi", "31.12.23, 21:41 - Мама: привет", "[31.12.23, 21:41:05] Bob: \u200eimage omitted",
    "13/13/23, 25:99 - X: impossible date", "1/1/24, 10:15\u202fAM - Alice: <Media omitted>", "continuation line",
    "99.99.9999, 99:99 - system line without a name", "[2024-01-01, 10:00] A: iso", "", "\u200e",
]


@FUZZ
@given(lines=st.lists(st.sampled_from(WHATSAPP_PIECES) | st.text(max_size=20), max_size=12),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1251", "utf-16"]))
def test_whatsapp_parser_on_any_lines(lines, encoding):
    data = "\n".join(lines).encode(encoding, errors="replace")
    for message in parse_all("whatsapp", data):
        assert message.time is None or message.time > 0


@FUZZ
@given(name=st.sampled_from(["a.json", "b.jsonl", "_chat.txt", "x.txt"]), head=st.binary(max_size=400))
def test_detect_takes_any_bytes(name, head):
    assert detect(name, head) in ("", *PARSERS)


@pytest.mark.parametrize("path, expected", [
    ("seed/seed_chat.json", "seed"),
    ("seed/seed_single.json", "seed"),
    ("instruction/alpaca.json", "instruction"),
    ("instruction/one_pair.json", "instruction"),
    ("chatgpt/chatgpt-export.zip", "chatgpt"),
    ("claude/claude-export.zip", "claude"),
    ("telegram/result.json", "telegram"),
    ("telegram/single_chat/result.json", "telegram"),
    ("whatsapp/WhatsApp Chat with Bob.zip", "whatsapp"),
    ("whatsapp/ios/_chat.txt", "whatsapp"),
    ("whatsapp/WhatsApp Chat - Мама.txt", "whatsapp"),
    ("discord/Dev Club - general [10].json", "discord"),
    ("sharegpt/sharegpt.json", "sharegpt"),
    ("messages/chat.jsonl", "messages"),
    ("bad/notes.txt", ""),
])
def test_detect_recognises_each_hand_made_export(path, expected):
    file = EXPORTS / path
    if file.suffix == ".zip":
        with zipfile.ZipFile(file) as archive:
            member = next(n for n in archive.namelist() if n.endswith((".json", ".txt")) and "user" not in n)
            name, head = member, archive.read(member)
    else:
        name, head = file.name, file.read_bytes()
    assert detect(name, head.removeprefix(b"\xef\xbb\xbf")) == expected
    assert (expected in MESSENGER_FORMATS) == (expected in ("telegram", "whatsapp", "discord"))


@pytest.mark.parametrize("fmt", ["telegram", "chatgpt"])
def test_big_exports_are_streamed_not_loaded_whole(tmp_path, fmt):
    if fmt == "telegram":
        path = tmp_path / "result.json"
        synthetic_exports.write_telegram_export(path, 60_000)
        stream = path.open("rb")
    else:
        path = tmp_path / "export.zip"
        synthetic_exports.write_chatgpt_export(path, 60_000)
        stream = zipfile.ZipFile(path).open("conversations.json")
    size = path.stat().st_size if fmt == "telegram" else zipfile.ZipFile(path).getinfo("conversations.json").file_size
    assert size > 8_000_000
    with stream:
        messages = read_messages(fmt, stream, [])
        first = next(messages)
        # The first message comes after reading about one chunk (1 MB), not the whole file.
        assert first.text and stream.tell() < size / 4
        assert sum(1 for _ in messages) + 1 >= 58_000


@FUZZ
@given(info=json_values, data=st.binary(max_size=200))
def test_telegram_owner_takes_any_document(info, data):
    """Reading a file's owner never raises: a broken or odd file is left to the main pass to report."""
    owner = telegram_owner(io.BytesIO(json.dumps({"personal_information": info, "chats": {}}).encode("utf-8")))
    assert owner is None or (isinstance(owner[0], str) and owner[1])
    telegram_owner(io.BytesIO(data))
    telegram_owner(io.BytesIO(b'{"personal_information": {"user_id": 5, "first_name": "A"' + data))
