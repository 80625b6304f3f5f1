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

from ftg.chat_formats import MESSENGER_FORMATS, PARSERS, FormatError, PartsStream, chat_parts, detect, read_messages
from ftg.formats_meta import repair_mojibake
from ftg.formats_slack import slack_text
from ftg.formats_telegram_discord import telegram_owner

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
    "participants", "sender_name", "timestamp_ms", "photos", "is_unsent", "senderName", "isUnsent", "media", "title",
    "threadName", "thread_path", "ts", "user", "subtype", "bot_id", "files", "user_profile", "profile", "real_name",
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
    ("telegram_html/ChatExport_2024-01-13/messages.html", "telegram_html"),
    ("telegram_html/ChatExport_2024-01-13/messages2.html", "telegram_html"),
    ("vk/Archive/messages/123456789/messages0.html", "vk"),
    ("vk/Archive/messages/index-messages.html", ""),
    ("meta/facebook-alice-2024-01-12-AbCdEf.zip", "meta"),
    ("meta/instagram-alice_in_wonderland-2024-01-13-XyZ.zip", "meta"),
    ("meta/e2ee/Bob Smith_1.json", "meta"),
    ("slack/Acme Slack export Jan 12 2024 - Jan 13 2024.zip", "slack"),
    ("bad/notes.txt", ""),
])
def test_detect_recognises_each_hand_made_export(path, expected):
    file = EXPORTS / path
    if file.suffix == ".zip":
        with zipfile.ZipFile(file) as archive:
            member = next(n for n in archive.namelist() if n.endswith((".json", ".txt")) and "user" not in n
                          and "channels" not in n and "integration" not in n)
            name, head = member, archive.read(member)
    else:
        name, head = file.name, file.read_bytes()
    assert detect(name, head.removeprefix(b"\xef\xbb\xbf")) == expected
    assert (expected in MESSENGER_FORMATS) == (expected in ("telegram", "telegram_html", "vk", "meta", "whatsapp",
                                                            "discord", "slack"))


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


TELEGRAM_HTML_PIECES = [
    '<div class="message default clearfix" id="message1">', '<div class="message default clearfix joined" id="message2">',
    '<div class="message service" id="message-1">', '<div class="message service" id="message3">',
    '<div class="pull_right date details" title="12.01.2024 14:02:11 UTC+03:00">14:02</div>',
    '<div class="pull_right date details" title="99.99.9999 99:99:99 UTC+99:99">', '<div class="from_name">Боб</div>',
    '<div class="from_name">', '<div class="text">Привет<br>мир &amp; 🙂</div>', '<div class="text">',
    '<div class="forwarded body">', '<div class="media_wrap clearfix">', '<div class="body details">joined</div>',
    '<div class="page_header"><div class="text bold">Chat</div>', "</div>", "</html>", "<!DOCTYPE html><html>",
    '<div class="from_name">Bot via @bot</div>',
]
VK_PIECES = [
    '<div class="message" data-id="1">', '<div class="message__header">',
    '<a href="https://vk.com/id5">Оля</a>, 12 янв 2020 в 14:02</div>', "Вы, 31 дек 2020 в 25:61:00 (ред.)</div>",
    "<div>Привет!<br>Как ты?", '<div class="kludges">', '<div class="attachment__description">Фото</div>',
    '<a class="im_srv_lnk">Оля</a> закрепила', "</div>", "</html>", '<div class="item">', "12 фев 0 в 1:1",
]


@pytest.mark.parametrize("fmt, pieces", [("telegram_html", TELEGRAM_HTML_PIECES), ("vk", VK_PIECES)])
@FUZZ
@given(data=st.data(), encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1251"]))
def test_html_parsers_on_any_mix_of_their_pieces(fmt, pieces, data, encoding):
    parts = data.draw(st.lists(st.sampled_from(pieces) | st.text(max_size=10), max_size=25))
    for message in parse_all(fmt, "\n".join(parts).encode(encoding, errors="replace")):
        assert isinstance(message.text, str) and (message.time is None or isinstance(message.time, float))


@FUZZ
@given(threads=st.lists(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6), max_size=3),
       messages=st.lists(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8), max_size=6))
def test_meta_and_slack_parsers_on_export_shaped_documents(threads, messages):
    for thread in threads:
        thread["messages"] = messages
    parse_all("meta", "".join(json.dumps(t) for t in threads).encode("utf-8"))  # files laid end to end
    parse_all("slack", (json.dumps(messages) + json.dumps(threads)).encode("utf-8"))


def test_mojibake_is_repaired_and_correct_text_is_left_alone():
    broken = "Привет! Café 😊".encode("utf-8").decode("latin-1")
    assert broken == "Ð\u009fÑ\u0080Ð¸Ð²ÐµÑ\u0082! CafÃ© ð\u009f\u0098\u008a"  # as Meta writes it
    assert repair_mojibake(broken) == "Привет! Café 😊"
    assert repair_mojibake("ÐŸÑ€Ð¸Ð²ÐµÑ‚") == "Привет"  # as the issue quotes it (shown as Windows-1252)
    for correct in ("Привет", "Café", "naïve résumé", "100 °C ± 2", "plain ascii", "😊", "Ã is a letter"):
        assert repair_mojibake(correct) == correct
    # Read from the Messenger fixture: the names and text come out repaired.
    with zipfile.ZipFile(EXPORTS / "meta" / "instagram-alice_in_wonderland-2024-01-13-XyZ.zip") as archive:
        raw = archive.read("your_instagram_activity/messages/inbox/katya_17845123456/message_1.json")
    assert "Ð\u009aÐ°Ñ\u0082Ñ\u008f" in json.loads(raw)["title"]  # "Катя" as Meta writes it
    messages = list(read_messages("meta", io.BytesIO(raw), []))
    assert [m.speaker for m in messages][:2] == ["Катя", "Alice"] and messages[1].text == "Да! Очень красиво 😍"


def test_slack_markup_becomes_plain_text():
    names = {"U1": "Alice"}
    assert slack_text("hi <@U1> and <@U9|bob>, see <https://x.example/a|the spec> or <https://y.example> "
                      "in <#C1|general> <!here> &lt;3 &amp; <mailto:a@b.example|a@b.example>", names) == (
        "hi @Alice and @bob, see the spec or https://y.example in #general @here <3 & a@b.example")


def test_chats_split_over_files_are_grouped_in_reading_order():
    names = ["t/messages2.html", "t/messages.html", "t/messages10.html", "t/photos/p.jpg",
             "vk/messages/5/messages50.html", "vk/messages/5/messages0.html", "vk/messages/5/messages100.html",
             "m/inbox/bob_1/message_1.json", "m/inbox/bob_1/message_2.json",
             "s/users.json", "s/general/2024-01-13.json", "s/general/2024-01-12.json", "s/random/2024-01-12.json"]
    assert sorted(chat_parts(names)) == sorted([
        ["t/messages.html", "t/messages2.html", "t/messages10.html"],
        ["vk/messages/5/messages100.html", "vk/messages/5/messages50.html", "vk/messages/5/messages0.html"],
        ["m/inbox/bob_1/message_2.json", "m/inbox/bob_1/message_1.json"],
        ["s/users.json", "s/general/2024-01-12.json", "s/general/2024-01-13.json"],
        ["s/users.json", "s/random/2024-01-12.json"],
    ])


def test_parts_stream_reads_files_end_to_end_and_seeks_back():
    parts = [b"<html>one</html>", b"", b"<html>two", b"</html>"]
    stream = io.BufferedReader(PartsStream([lambda p=p: io.BytesIO(p) for p in parts]))
    assert stream.read() == b"".join(parts)
    stream.seek(0)
    assert stream.read(4) == b"<htm" and stream.tell() == 4


def test_telegram_html_time_keeps_its_utc_offset_and_joined_blocks_keep_their_sender():
    folder = EXPORTS / "telegram_html" / "ChatExport_2024-01-13"
    pages = [(folder / name).read_bytes() for name in ("messages.html", "messages2.html")]
    messages = list(read_messages("telegram_html", io.BytesIO(b"".join(pages)), []))
    assert len(messages) == 12 and messages[0].time == 1705057331.0  # 12.01.2024 14:02:11 UTC+03:00 = 11:02:11 UTC
    assert [m.speaker for m in messages[6:8]] == ["Боб", "Боб"]  # messages2.html opens with a joined block


@pytest.mark.parametrize("fmt, pages, name, third", [
    ("telegram_html", [EXPORTS / "telegram_html" / "ChatExport_2024-01-13" / n for n in ("messages.html", "messages2.html")],
     "\nБоб\n".encode(), "\nКэрол\n".encode()),
    ("vk", [EXPORTS / "vk" / "Archive" / "messages" / "123456789" / n for n in ("messages50.html", "messages0.html")],
     ">Ольга Смирнова</a>".encode("cp1251"), ">Кэрол</a>".encode("cp1251")),
], ids=["telegram_html", "vk"])
def test_a_third_speaker_on_the_last_page_makes_the_whole_chat_a_group(fmt, pages, name, third):
    """The parsers look through every page for speakers before the first message: a third one who writes only on
    the last page still makes every message a group message (other speakers' names then prefix their lines)."""
    data = [path.read_bytes() for path in pages]
    assert not any(m.group for m in read_messages(fmt, io.BytesIO(b"".join(data)), []))
    assert data[-1].count(name) >= 1
    data[-1] = third.join(data[-1].rsplit(name, 1))  # the last message of that speaker on the last page
    messages = list(read_messages(fmt, io.BytesIO(b"".join(data)), []))
    assert messages and all(m.group for m in messages)
    assert "Кэрол" in {m.speaker for m in messages}
