"""prepare_dataset on hand-made exports of every format (tests/exports/), with their awkward cases: the exact
conversations and roles, whose voice is learned, the leak-free split, lengths in
tokens of Gemma's own chat template, personal data scrubbing, and bad files reported while good ones go through."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

import prepare_conversation_data as prep
from ftg.config import load_config
from ftg.errors import UserError
from ftg.examples import Lengths, example_ranges
from ftg.text_cleaning import clean_text

EXPORTS = Path(__file__).parent / "exports"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import synthetic_exports  # noqa: E402


def prepare(tmp_path: Path, inputs: Path, **data) -> tuple[list[dict], dict]:
    """Run the stage with no model selected (lengths estimated) unless data says otherwise; all in train by default."""
    model = data.pop("model", "")
    overrides = {
        "paths": {"models_dir": tmp_path / "no-models"},
        "model": {"model": str(model)},
        "data": {"input": str(inputs), "output": str(tmp_path / "data"), "eval_fraction": 0.0, **data},
    }
    out = prep.run(load_config(tmp_path / "no-config.yaml", overrides))
    examples = [json.loads(line) for name in (prep.TRAIN_FILE, prep.EVAL_FILE)
                for line in (out / name).read_text(encoding="utf-8").splitlines()]
    report = json.loads((out / prep.PREPARE_REPORT).read_text(encoding="utf-8"))
    assert report["messages_read"] == report["messages_used"] + sum(report["messages_skipped"].values())
    return examples, report


def shape(examples: list[dict]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(conversation id without the file part, [(role, content), ...]) per example, in file order."""
    return [(e["conversation_id"].split(":", 1)[1], [(m["role"], m["content"]) for m in e["messages"]])
            for e in examples]


EXPECTED = {
    "seed": (
        [
            ("conversation", [("user", "Hello there\nCan you help me plan a trip to Kazan?"),
                              ("assistant", "Of course! Spend a day in the Kremlin and try chak-chak.\nAnything else?")]),
            ("conversation", [("user", "What about the weather in May?"), ("assistant", "Mild, around 15-20 °C.")]),
        ],
        {"empty": 1, "prompt_without_reply": 1},  # the empty User turn; the single-object file's lone message
    ),
    "instruction": (
        [
            ("#0", [("user", "Give a synonym for happy."), ("assistant", "Joyful.")]),
            ("#1", [("user", "Translate to Russian.\n\nGood morning"), ("assistant", "Доброе утро")]),
            ("#0", [("user", "Say hi."), ("assistant", "Hi!")]),  # a dict instead of a list
        ],
        {"empty": 1, "prompt_without_reply": 1},
    ),
    "chatgpt": (
        [
            # current_node's thread: the regenerated "About 9 minutes." is not in it.
            ("c1", [("user", "How long do I boil spaghetti?"), ("assistant", "Boil it for 8-10 minutes, then taste.")]),
            # The image part of a multimodal message is dropped; the code/tool steps in between are skipped.
            ("c1", [("user", "Is this al dente?"), ("assistant", "Yes, it looks al dente. Drain it now.")]),
            # No current_node: the newest reply's thread.
            ("c2", [("user", "Привет! Как сказать «спасибо» по-японски?"), ("assistant", "«Аригато» (ありがとう).")]),
        ],
        {"other_branch": 2, "tool": 2, "hidden": 1},
    ),
    "claude": (
        [
            ("k1", [("user", "Write a haiku about rain."),  # text was empty; content held it
                    ("assistant", "Soft rain on the roof\nthe kettle starts to whisper\nbooks smell of old paper")]),
            ("k1", [("user", "[notes.txt]\nMeeting at 5pm. Call me at [PHONE].\n\nSummarise this file"),
                    ("assistant", "A meeting at 5pm and a phone number to call.")]),
        ],
        {"tool": 2, "media_only": 1, "reply_without_prompt": 1},
    ),
    "telegram": (
        [
            ("Bob [222]@1", [("user", "Hi Alice! Are you coming tonight?\nBring snacks 🙂"),
                             ("assistant", "Sure! Here is the place: https://maps.example.com/x")]),
            # 8 hours of silence start a new conversation; the phone number is scrubbed.
            ("Bob [222]@2", [("user", "Мы на месте, ты где?"), ("assistant", "Уже бегу! Мой номер [PHONE]")]),
            ("Hiking club [333]@1", [("user", "Carol: Who's in for Saturday?\nDave: Me!"),
                                     ("assistant", "Count me in, I'll bring the map.")]),
            # single_chat/result.json starts with a UTF-8 BOM
            ("Мама [777]@1", [("user", "Ты поела?"), ("assistant", "Да, мам, всё хорошо ❤️")]),
            ("Мама [777]@1", [("user", "Позвони вечером"), ("assistant", "Хорошо!")]),
        ],
        {"media_only": 2, "forwarded": 1, "service": 1, "bot": 2, "prompt_without_reply": 2},
    ),
    "whatsapp": (
        [
            # cp1251, Android RU dates
            ("chat@1", [("user", "Доброе утро! Ты позавтракала?"), ("assistant", "Да, овсянку с бананом")]),
            ("chat@1", [("user", "Молодец"), ("assistant", "Спасибо, мам!")]),
            # Android US, 12-hour clock, in a zip; a multi-line message
            ("chat@1", [("user", "Happy New Year!!"), ("assistant", "Happy New Year, Bob!\nHave a great 2024.\nSee you soon")]),
            ("chat@2", [("user", "Thanks! Write me: [EMAIL]"), ("assistant", "Will do 👍")]),
            # iOS, U+200E marks, CRLF
            ("chat@1", [("user", "С Новым годом!"), ("assistant", "И тебя! 🎄\nПусть год будет добрым.")]),
        ],
        {"media_only": 3, "service": 2, "prompt_without_reply": 1},
    ),
    "discord": (
        [
            ("Dev Club #general [10]@1", [("user", "Erin: Anyone tried the Rust 2024 edition?"),
                                          ("assistant", "Yes! Migration took me ten minutes.")]),
            ("Dev Club #general [10]@1", [("user", "Frank: Nice, thanks"), ("assistant", "Anytime 🙂")]),
        ],
        {"service": 1, "media_only": 1, "bot": 1},
    ),
    "telegram_html": (
        [
            # Two pages; "joined" blocks take the sender before them, across the page break too.
            ("Боб@1", [("user", "Привет, Алиса! Идёшь сегодня?\nЗахвати печенье 🍪"),
                       ("assistant", "Конечно!\nБуду в семь.")]),  # a reply: the "In reply to" line is not text
            ("Боб@1", [("user", 'Красота! "Лайк"\nВо сколько выходишь?'),
                       ("assistant", "В 18:30, вот место: https://maps.example.com/x")]),
            # 14:12 -> 09:00 next day (dates carry UTC+03:00): a new conversation
            ("Боб@2", [("user", "Доброе утро! Как дошла?"), ("assistant", "Отлично, спасибо ❤️")]),
        ],
        {"media_only": 1, "service": 1, "forwarded": 1, "bot": 1},  # date separators are not messages
    ),
    "vk": (
        [
            # windows-1251, two pages each newest first; "Вы" (no profile link) is the owner; "(ред.)" = edited
            ("chat@1", [("user", "Привет! Встречаемся завтра?"), ("assistant", "Да, всё в силе 🙂")]),
            ("chat@1", [("user", "Отлично, до встречи!"), ("assistant", "Пока!\nДо завтра")]),
            ("chat@2", [("user", "Я на месте, ты где?"), ("assistant", "Бегу, буду через 5 минут")]),
        ],
        {"media_only": 1, "service": 1},
    ),
    "meta": (
        [
            # Messenger, two files newest first, mojibake repaired (Cyrillic, emoji, "Café")
            ("Bob Smith@1", [("user", "Привет! Как дела?"), ("assistant", "Хорошо 😊 А у тебя?")]),
            ("Bob Smith@1", [("user", "Тоже хорошо. Café tonight?"), ("assistant", "Давай! В 7 👍")]),
            # Instagram
            ("Катя@1", [("user", "Ты видела новый пост?"), ("assistant", "Да! Очень красиво 😍")]),
            ("Катя@1", [("user", "Смотри 😂"), ("assistant", "Ахаха, точно")]),
            # The end-to-end-encrypted export's schema (senderName, text, timestamp), correct UTF-8 left alone
            ("Bob Smith@1", [("user", "Ты уже дома? 🏠"), ("assistant", "Да, только что пришла. Café было супер")]),
        ],
        {"media_only": 3, "service": 2, "deleted": 1},  # photo/attachment; call, reaction; unsent
    ),
    "slack": (
        [
            # user ids -> names, <@U..>, <url|label>, &amp; resolved; the join, the bot and the upload skipped
            ("channel@1", [("user", "Борис: Всем привет! @Alice, посмотри спеку 🙏"),
                           ("assistant", "Посмотрю после обеда & отпишусь")]),
            ("channel@2", [("user", "Борис: Ну что, @here созвон в 11? Пиши на [EMAIL]"), ("assistant", "Да, буду 👍")]),
            ("channel@1", [("user", "Борис: Кто на обед? #general молчит"), ("assistant", "Я!")]),
        ],
        {"service": 2, "bot": 1, "media_only": 1, "prompt_without_reply": 1},
    ),
    "sharegpt": (
        [
            ("sg1", [("system", "You are a kind tutor."), ("user", "What is 2+2?"), ("assistant", "4.")]),
            ("sg1", [("system", "You are a kind tutor."), ("user", "And 3+3?"), ("assistant", "6.")]),
            ("sg2", [("user", "Translate 'cat' to French"), ("assistant", "chat")]),  # user/assistant spelling
        ],
        {},
    ),
    "messages": (
        [
            ("#0", [("system", "Be brief."), ("user", "Name a color."), ("assistant", "Blue.")]),
            ("#1", [("user", "Hi"), ("assistant", "Hello!\nHow can I help?")]),  # content as a list of parts
        ],
        {"media_only": 1, "reply_without_prompt": 1, "malformed": 1},
    ),
}


@pytest.mark.parametrize("fmt", list(EXPECTED))
def test_each_format_gives_the_exact_conversations_and_roles(tmp_path, fmt):
    examples, report = prepare(tmp_path, EXPORTS / fmt, me=["Alice", "Алиса", "owner"])  # owner: VK's "Вы"
    expected, skipped = EXPECTED[fmt]
    assert sorted(shape(examples)) == sorted(expected)
    assert report["messages_skipped"] == skipped
    assert set(report["formats"]) == {fmt}
    for example in examples:
        roles = [m["role"] for m in example["messages"] if m["role"] != "system"]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and example["source"].startswith(fmt + ":")


def test_whatsapp_saved_as_utf16_is_found_and_read_the_same(tmp_path):
    """Windows Notepad's "Unicode" is UTF-16 with a BOM: found without --format, read like the original."""
    folder = tmp_path / "utf16"
    shutil.copytree(EXPORTS / "whatsapp", folder)
    for path in folder.rglob("*.txt"):
        raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp1251")
        path.write_bytes(text.encode("utf-16"))  # Python's utf-16 writes the BOM, little-endian here
    assert next(folder.rglob("*.txt")).read_bytes()[:2] == b"\xff\xfe"
    examples, report = prepare(tmp_path, folder, me=["Alice", "Алиса"])
    assert sorted(shape(examples)) == sorted(EXPECTED["whatsapp"][0])
    assert set(report["formats"]) == {"whatsapp"}


def test_me_matches_an_account_id_and_is_required_for_messengers(tmp_path, capsys):
    by_id, _ = prepare(tmp_path, EXPORTS / "telegram", me=["111"])  # Telegram's from_id is "user111"
    assert sorted(shape(by_id)) == sorted(EXPECTED["telegram"][0])

    # A full Telegram export names its owner (personal_information.user_id 111, Alice): without --me, that voice is
    # learned, in the one-chat export beside it too (Telegram ids are global).
    capsys.readouterr()
    by_owner, report = prepare(tmp_path, EXPORTS / "telegram")
    assert sorted(shape(by_owner)) == sorted(EXPECTED["telegram"][0])
    assert report["me"] == ["111"]
    assert "Learning the voice of Alice (id 111): the owner of the Telegram export" in capsys.readouterr().out

    # A one-chat export does not say whose it is: `me` is required, with a participants table to choose from.
    code = prep.main(["--input", str(EXPORTS / "telegram" / "single_chat"), "--output", str(tmp_path / "out"),
                      "--models-dir", str(tmp_path / "no-models")])
    error = capsys.readouterr().err
    assert code == 1
    assert "--me NAME" in error and "data.me" in error
    # The participants table: usable messages per person, so the user can pick their own name.
    assert "          2  Мама  (id user777)" in error and "          2  Alice  (id user111)" in error
    assert not (tmp_path / "out" / prep.TRAIN_FILE).exists()

    with pytest.raises(UserError, match="nothing usable"):
        prepare(tmp_path, EXPORTS / "telegram", me=["Nobody"])
    report = json.loads((tmp_path / "data" / prep.PREPARE_REPORT).read_text(encoding="utf-8"))
    assert all("none of your --me names wrote here" in f["notes"][0] for f in report["files"])


def test_whole_folder_from_the_command_line_reports_bad_files_and_keeps_the_good(tmp_path, capsys):
    out = tmp_path / "данные"
    base = ["--input", str(EXPORTS), "--output", str(out), "--me", "Alice", "--me", "Алиса", "--me", "owner",
            "--models-dir", str(tmp_path / "no-models")]
    assert prep.main(base) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / prep.PREPARE_REPORT).read_text(encoding="utf-8"))
    failed = {f["file"]: f["problem"] for f in report["files_failed"]}
    assert failed["bad/empty.json"] == "empty file"
    assert failed["bad/notes.txt"].startswith("unknown format")
    assert failed["bad/broken.json"].startswith("malformed JSON")
    assert "cut off" in failed["bad/truncated.json"]
    assert failed["discord_package/package.zip/package/ (7 files)"].startswith("Discord's own data package")
    # Passed over without a failure: 2 pictures, chat.html, ChatGPT's user.json, Claude's users.json; Telegram
    # HTML's style.css; VK's index-messages.html; Meta's photo, autofill, profile and likes files; Slack's
    # channels.json and integration_logs.json.
    assert "bad/photo.jpg" not in failed and report["files_not_chat_exports_by_name"] == 13
    for name in failed:
        assert name in printed  # one line per bad file
    assert report["messages_read"] == 93 + 12 + 8 + 16 + 11 and report["messages_used"] == 60 + 8 + 6 + 10 + 6
    assert report["messages_read"] == report["messages_used"] + sum(report["messages_skipped"].values())
    assert report["pii_replaced"] == {"email": 2, "phone": 2, "card": 0, "url": 0}
    instruct = report["examples_train"] + report["examples_eval"]
    assert instruct == sum(len(v[0]) for v in EXPECTED.values())
    assert report["examples_eval"] >= 1  # 5% of 20 conversations rounds to none: one is moved to eval
    assert (out / prep.LENGTHS_PLOT).read_bytes()[:4] == b"\x89PNG"

    assert prep.main(base + ["--mode", "conversational"]) == 0
    report = json.loads((out / prep.PREPARE_REPORT).read_text(encoding="utf-8"))
    examples = [json.loads(line) for name in (prep.TRAIN_FILE, prep.EVAL_FILE)
                for line in (out / name).read_text(encoding="utf-8").splitlines()]
    assert report["examples_train"] + report["examples_eval"] == len(examples) > instruct
    history = [e for e in examples if e["conversation_id"].endswith(":sg1") and len(e["messages"]) == 5]
    assert [m["content"] for m in history[0]["messages"]] == [
        "You are a kind tutor.", "What is 2+2?", "4.", "And 3+3?", "6."]


def test_owner_is_learned_where_the_export_names_them(tmp_path, capsys):
    """VK marks your own messages; a Messenger/Instagram two-person thread is named after the other person."""
    examples, report = prepare(tmp_path, EXPORTS / "vk")
    assert sorted(shape(examples)) == sorted(EXPECTED["vk"][0]) and report["me"] == ["owner"]
    assert "the owner of the VK archive" in capsys.readouterr().out
    examples, report = prepare(tmp_path, EXPORTS / "meta")
    assert sorted(shape(examples)) == sorted(EXPECTED["meta"][0]) and report["me"] == ["Alice"]
    assert "Learning the voice of Alice (id Alice): the owner of the Messenger/Instagram threads" in capsys.readouterr().out
    # Telegram HTML and Slack name nobody: `me` is asked for, with the participants.
    for fmt, row in (("telegram_html", "          5  Боб"), ("slack", "          4  Борис  (id U02BORIS)")):
        with pytest.raises(UserError, match="--me NAME") as error:
            prepare(tmp_path, EXPORTS / fmt)
        assert row in str(error.value)


def test_me_matches_any_of_a_persons_ids_and_names(tmp_path):
    """Issue 32: --me may give a Slack user's id, handle, real name or display name (users.json), in any case; a
    Telegram user id with or without "user"; a VK id with or without "id". Each picks the same replies."""
    for fmt, names in (("slack", ["U01ALICE", "alice", "Alice Liddell", "alice liddell", "Alice"]),
                       ("telegram", ["user111", "111"])):
        for name in names:
            examples, _ = prepare(tmp_path, EXPORTS / fmt, me=[name])
            assert sorted(shape(examples)) == sorted(EXPECTED[fmt][0]), (fmt, name)
    bob = [sorted(shape(prepare(tmp_path, EXPORTS / "vk", me=[name])[0])) for name in ("id123456789", "123456789")]
    assert bob[0] and bob[0] == bob[1] and bob[0] != sorted(EXPECTED["vk"][0])  # the other side's voice


def test_sample_pairs_and_participants_are_shown_before_training(tmp_path, capsys):
    prepare(tmp_path, EXPORTS / "telegram_html", me=["Alice"])
    out = capsys.readouterr().out
    assert "        4  Alice  <- you\n" in out and "        5  Боб\n" in out
    assert "    them: Привет, Алиса! Идёшь сегодня? Захвати печенье 🍪 → you: Конечно! Буду в семь.\n" in out
    assert out.count("    them: ") == 3


def test_discord_data_package_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match="no chat export found"):
        prepare(tmp_path, EXPORTS / "discord_package")
    lines = [line for line in capsys.readouterr().out.splitlines() if "SKIPPED" in line]
    assert lines == ["  SKIPPED package.zip/package/ (7 files): Discord's own data package holds only the messages "
                     "you sent, so it cannot make training pairs; export the chats with DiscordChatExporter (JSON) "
                     "instead, which this tool reads"]


def test_nothing_usable_fails_with_a_clear_message(tmp_path):
    only_bad = tmp_path / "bad"
    shutil.copytree(EXPORTS / "bad", only_bad)
    with pytest.raises(UserError, match="nothing usable"):
        prepare(tmp_path, only_bad)  # broken.json and truncated.json look like exports, but fail
    for name in ("broken.json", "truncated.json"):
        (only_bad / name).unlink()
    with pytest.raises(UserError, match="no chat export found"):
        prepare(tmp_path, only_bad)
    seed_without_replies = tmp_path / "one"
    shutil.copytree(EXPORTS / "seed", seed_without_replies)
    (seed_without_replies / "seed_chat.json").unlink()
    with pytest.raises(UserError, match="nothing usable"):
        prepare(tmp_path, seed_without_replies)
    report = json.loads((tmp_path / "data" / prep.PREPARE_REPORT).read_text(encoding="utf-8"))
    assert report["messages_skipped"] == {"prompt_without_reply": 1}


def test_split_is_by_conversation_seeded_and_made_before_expansion(tmp_path):
    synthetic_exports.write_styled_dataset(tmp_path / "in", 120, seed=3)
    settings = dict(me=[synthetic_exports.ME_NAME], mode="conversational", eval_fraction=0.2)
    examples, report = prepare(tmp_path, tmp_path / "in", **settings)
    train = {e["conversation_id"] for e in examples[: report["examples_train"]]}
    held = {e["conversation_id"] for e in examples[report["examples_train"]:]}
    assert train and held and not train & held
    assert 0.1 < len(held) / (len(train) + len(held)) < 0.3
    assert all(synthetic_exports.has_style(e["messages"][-1]["content"]) for e in examples)

    again, _ = prepare(tmp_path, tmp_path / "in", **settings)
    assert again == examples  # same seed, same files
    other, _ = prepare(tmp_path, tmp_path / "in", split_seed=7, **settings)
    assert {e["conversation_id"] for e in other[report["examples_train"]:]} != held


def test_lengths_use_gemma_chat_template_and_keep_the_final_reply(tmp_path, tiny_gemma3_dir, tokenizer_of):
    long_story = " ".join(f"Sentence number {i} of a long story about the sea." for i in range(40))
    records = [
        {"messages": [{"role": "user", "content": f"Question 0: {long_story}"},
                      {"role": "assistant", "content": "Answer 0."}]},
        {"messages": [m for i in range(6) for m in ({"role": "user", "content": f"Turn {i}: {long_story[:300]}"},
                                                    {"role": "assistant", "content": f"Reply {i}, briefly."})]},
        {"messages": [{"role": "user", "content": "Tell me everything."},
                      {"role": "assistant", "content": long_story * 2}]},
    ]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "long.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    limit = 200
    examples, report = prepare(tmp_path, folder, mode="conversational", max_example_tokens=limit,
                               model=tiny_gemma3_dir)
    assert report["token_lengths"]["measured_with"].startswith("tokenizer and chat template")
    tokenizer = tokenizer_of(tiny_gemma3_dir)
    lengths = []
    for example in examples:
        ids = tokenizer.apply_chat_template(example["messages"], tokenize=True)["input_ids"]
        assert Lengths(tokenizer).count(example["messages"]) == len(ids)  # one <bos>, not two
        lengths.append(len(ids))
    assert max(lengths) <= limit == report["token_lengths"]["limit"]
    assert max(lengths) == report["token_lengths"]["max"]
    # The over-long first prompt is cut from its start; the final reply is whole.
    first = [e for e in examples if e["messages"][-1]["content"] == "Answer 0."]
    assert len(first) == 1 and first[0]["messages"][0]["content"].endswith("story about the sea.")
    assert not first[0]["messages"][0]["content"].startswith("Question 0")
    # The six-exchange history loses its oldest turns first and still ends with the last reply.
    last_replies = [e["messages"] for e in examples if e["messages"][-1]["content"] == "Reply 5, briefly."]
    assert max(len(m) for m in last_replies) < 12 and report["examples_shortened"] >= 2
    # A reply that alone exceeds the limit is counted as skipped, with its prompt.
    assert report["messages_skipped"]["reply_too_long"] == 2
    assert not any(e["messages"][-1]["content"] == long_story * 2 for e in examples)


def test_exact_duplicates_are_dropped_and_counted(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pair = {"instruction": "Ping?", "output": "Pong!"}
    (folder / "pairs.json").write_text(json.dumps([pair, pair, {"instruction": "Other", "output": "Yes"}]),
                                       encoding="utf-8")
    examples, report = prepare(tmp_path, folder)
    assert [e["messages"][0]["content"] for e in examples] == ["Ping?", "Other"]
    assert report["examples_duplicate_dropped"] == 1 and report["messages_skipped"] == {"duplicate": 2}


def test_personal_data_is_replaced_with_typed_placeholders():
    counts = Counter()
    text = ("Mail me at jane.doe+work@mail.example.org or call +7 912 345-67-89 / (555) 123-4567, "
            "card 4111 1111 1111 1111, see https://example.com/a?b=1.")
    assert clean_text(text, True, True, counts) == (
        "Mail me at [EMAIL] or call [PHONE] / [PHONE], card [CARD], see [URL].")
    assert counts == {"email": 1, "phone": 2, "card": 1, "url": 1}
    kept = ("Meet on 31.12.2023 at 21:41, order 12345, 2023-12-31 21:41, card-like 4111 1111 1111 1112, "
            "pi 3.14159265358979, https://example.com/x")
    assert clean_text(kept, True, False, counts) == kept
    assert clean_text(" Cafe\u0301\r\nnext\u200e line ", False, False, Counter()) == "Café\nnext line"
    assert clean_text("call +7 912 345-67-89", False, False, Counter()) == "call +7 912 345-67-89"


def test_conversational_mode_adds_history_and_windows():
    assert example_ranges(3, "instruct", [2]) == [(0, 0), (1, 1), (2, 2)]
    assert example_ranges(5, "conversational", [2, 4]) == [
        (0, 0), (1, 1), (2, 2), (3, 3), (4, 4),  # pairs
        (0, 1), (0, 2), (0, 3), (0, 4),  # growing history
        (1, 2), (2, 3), (3, 4),  # last 2 exchanges (windows that equal the history are not repeated)
        (1, 4),  # last 4 exchanges
    ]
