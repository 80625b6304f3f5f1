"""ftg/style.py, style_fingerprint.py and style_classifier.py: each habit of the fingerprint on hand-written replies
(exact values), the distances, the authorship classifier, the verdict, the chart and the HTML fragment; and the
realistic personas of bench/synthetic_exports.py through the real importer (bursts merged into one reply)."""

from __future__ import annotations

import base64
import json
import math
import random
import re
import sys
from pathlib import Path

import pytest

from ftg import style, style_classifier, style_fingerprint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import synthetic_exports  # noqa: E402


def habit(replies: list[str], kind: str, name: str):
    return style_fingerprint.fingerprint(replies)[kind][name]


# ---------------------------------------------------------------------------------------------------------------
# One test per habit


def test_words_and_characters_per_reply():
    replies = ["hi there", "Привет, как дела?", "don't stop — чак-чак!", "  ", "👍"]
    assert habit(replies, "numeric", "words") == [2, 3, 3, 0, 0]
    assert habit(replies, "numeric", "chars") == [8, 17, 21, 0, 1]  # stripped; an emoji is one character here


def test_lines_per_reply_count_non_empty_lines():
    # A messenger burst arrives merged by the importer, one message per line.
    assert habit(["one", "ахах\nда\nпойдём", "Hello,\n\nbody\n\nAll the best,\nArthur", ""], "numeric",
                 "lines") == [1, 3, 4, 0]


def test_emoji_per_reply_and_the_ones_used():
    replies = ["ok 👍🏽👍", "🇷🇺 flag", "love ❤️", "© ™ no emoji", "👨‍👩‍👧 family", "Ahoy! ⚓"]
    assert habit(replies, "numeric", "emoji") == [2, 1, 1, 0, 1, 1]
    assert habit(replies, "categorical", "emoji_used") == {"👍🏽": 1, "👍": 1, "🇷🇺": 1, "❤️": 1, "👨‍👩‍👧": 1,
                                                          "⚓": 1}


def test_endings():
    replies = ["Done.", "Wow!", "Really?", "well…", "hmm...", "ахах))", "ok :)", "Ahoy ⚓", "no stop", "(a) b 5"]
    assert habit(replies, "categorical", "ending") == {".": 1, "!": 1, "?": 1, "…": 2, ")": 2, "emoji": 1,
                                                       "other": 2}


def test_lowercase_starts():
    replies = ["hello", "Hello", "привет", "Привет", "  ахах", "123 go", "👍 ok", ""]
    assert habit(replies, "categorical", "start") == {"lowercase": 3, "uppercase": 2, "other": 3}


def test_cyrillic_latin_share_counts_letters():
    assert habit(["Привет hi", "ok", "ß 3"], "categorical", "script") == {"cyrillic": 6, "latin": 5}
    assert habit(["Γειά"], "categorical", "script") == {"other": 4}


def test_markdown_structure():
    replies = ["- a\n- b", "1. first\n2) second", "## Title\ntext", "**bold** word", "# H\n* item **b**",
               "a - b, 1.5 and #hashtag", "plain"]
    assert habit(replies, "categorical", "markdown") == {"list": 3, "heading": 2, "bold": 2, "none": 2}


def test_openers_and_closers():
    replies = ["Ahoy! Nice day ⚓", "ахах ну да))", "Hello,\n\nSure.\n\nAll the best,\nArthur", "))"]
    fp = style_fingerprint.fingerprint(replies)
    assert fp["categorical"]["opener"] == {"ahoy": 1, "ахах": 1, "hello": 1, "": 1}
    assert fp["categorical"]["closer"] == {"⚓": 1, "да": 1, "arthur": 1, "": 1}


def test_typical_words_log_odds_with_informative_prior():
    person = {"ахах": 12, "the": 5, "ну": 6, "once": 1}
    base = {"the": 60, "model": 20, "ну": 1, "certainly": 15}
    rows = style_fingerprint.typical_words(person, base)
    assert [row["word"] for row in rows] == ["ахах", "ну"]  # "the" is the base model's; "once" is too rare
    assert rows[0]["count"] == 12 and rows[0]["other_count"] == 0 and rows[0]["z"] > rows[1]["z"] > 0
    # By hand: n = 24 and 96 words; alpha = 1000 * 12 / 120 = 100; sigma^2 = 1/112 + 1/100;
    # delta = ln((12 + 100) / (24 + 1000 - 12 - 100)) - ln((0 + 100) / (96 + 1000 - 0 - 100)).
    delta = math.log(112 / 912) - math.log(100 / 996)
    assert rows[0]["z"] == pytest.approx(delta / math.sqrt(1 / 112 + 1 / 100), abs=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# Distances

TEXTER = ["ахах да", "ну пойдём))", "кстати я уже дома\nскинь фотки", "ок)", "слушай а когда встреча",
          "ахах\nну ты даёшь", "не знаю(", "weekend будет cool))"]
BOT = ["Certainly! Here is a short overview:\n\n- **First**, consider the context.\n- **Second**, check the details.",
       "## Summary\n\nThat is a great question. Let me explain it step by step so that everything is clear.",
       "Of course. The answer depends on several factors, which I will describe below in some detail.",
       "I hope this helps! Let me know if you have any other questions. 😊",
       "Here are three ideas:\n1. Read a book.\n2. Go for a walk.\n3. Call a friend.",
       "Great question! **In short:** yes, but there are a few caveats worth mentioning here."]


def test_identical_sets_have_distance_zero():
    d = style_fingerprint.distance(style_fingerprint.fingerprint(TEXTER + BOT),
                                   style_fingerprint.fingerprint(list(reversed(TEXTER + BOT))))
    assert d["overall"] == 0 and set(d["habits"].values()) == {0.0}
    assert set(d["habits"]) == set(style_fingerprint.HABITS)


def test_clearly_different_sets_are_far_apart():
    d = style_fingerprint.distance(style_fingerprint.fingerprint(TEXTER), style_fingerprint.fingerprint(BOT))
    assert d["overall"] > 0.6, d
    assert d["habits"]["script"] > 0.8  # Cyrillic (a few English words) against Latin letters
    assert d["habits"]["opener"] == pytest.approx(1.0)  # no first word in common


def test_numeric_distance_is_scaled_by_ratio():
    assert style_fingerprint.numeric_distance([0] * 4, [1] * 4) == pytest.approx(0.5)  # log(2) apart: "twice"
    assert style_fingerprint.numeric_distance([3] * 4, [15] * 5) == pytest.approx(0.75)  # log(16/4): "four times"
    assert style_fingerprint.numeric_distance([1, 2, 3], [3, 2, 1]) == 0
    assert style_fingerprint.wasserstein([0, 1], [0, 3]) == pytest.approx(1.0)


def test_jensen_shannon_distance():
    assert style_fingerprint.js_distance({"a": 1}, {"b": 5}) == pytest.approx(1.0)
    assert style_fingerprint.js_distance({"a": 2, "b": 2}, {"b": 1, "a": 1}) == 0
    divergence = 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)) + 0.5 * math.log2(1 / 0.75)
    assert style_fingerprint.js_distance({"a": 1, "b": 1}, {"a": 3}) == pytest.approx(math.sqrt(divergence))
    assert style_fingerprint.js_distance({}, {}) == 0 and style_fingerprint.js_distance({}, {"a": 1}) == 1


# ---------------------------------------------------------------------------------------------------------------
# Would this pass as yours?


def two_styles(count: int, seed: int) -> tuple[list[str], list[str]]:
    """Hand-made texter and assistant replies, varied by combining parts."""
    rng = random.Random(seed)
    subjects = ["кино", "ужин", "работа", "отпуск", "кот", "погода", "встреча", "книжка"]
    texter = [f"{rng.choice(['ахах', 'ну', 'слушай', 'кстати'])} {rng.choice(subjects)} "
              f"{rng.choice(['норм', 'супер', 'так себе', 'огонь'])}{rng.choice(['))', ')', ''])}"
              for _ in range(count)]
    topics = ["the weather", "dinner", "your trip", "the meeting", "a good book", "your cat"]
    bot = [f"{rng.choice(['Certainly!', 'Of course.', 'Great question!'])} Here is what I think about "
           f"{rng.choice(topics)}:\n\n- **{rng.choice(['First', 'Overall'])}**, it depends on the context.\n"
           f"- I hope this helps{rng.choice(['!', '.'])}" for _ in range(count)]
    return texter, bot


def test_classifier_separates_two_hand_made_styles():
    texter, bot = two_styles(60, seed=1)
    held_texter, held_bot = two_styles(20, seed=2)
    result = style_classifier.pass_as_yours(texter, bot, {"tuned": held_texter, "base": held_bot})
    assert result["tuned"] == 1.0 and result["base"] == 0.0
    assert result["train"] == {"person": 60, "base": 60, "others": 0}
    again = style_classifier.pass_as_yours(texter, bot, {"tuned": held_texter, "base": held_bot})
    assert again == result  # deterministic


def friend_lines(count: int, seed: int) -> list[str]:
    """A chat partner's lines: the texter's language and letters, none of the texter's habits."""
    rng = random.Random(seed)
    subjects = ["кино", "ужин", "работу", "отпуск", "кота", "погоду", "встречу", "книжку"]
    return [f"{rng.choice(['Привет!', 'Слушай,', 'Скажи,', 'Добрый вечер.'])} Что ты думаешь про "
            f"{rng.choice(subjects)}{rng.choice(['?', '? Расскажи.', ', как тебе?'])}" for _ in range(count)]


def test_an_echo_of_the_other_speaker_does_not_pass_as_yours():
    # A base model that repeats the friend's Russian line writes the person's language; known only against the
    # English base, the classifier took every such echo for the person's. With the friend's lines as negatives, none.
    texter, bot = two_styles(60, seed=1)
    held_texter, _ = two_styles(20, seed=2)
    candidates = {"tuned": held_texter, "echo": friend_lines(20, seed=6)}
    alone = style_classifier.pass_as_yours(texter, bot, candidates)
    assert alone["echo"] == 1.0
    result = style_classifier.pass_as_yours(texter, bot, candidates, others_train=friend_lines(60, seed=5))
    assert result["echo"] == 0.0 and result["tuned"] == 1.0
    assert result["train"] == {"person": 60, "base": 60, "others": 60}


def rambles(count: int, seed: int) -> list[str]:
    """The texter's own words, but ten capitalised sentences with full stops: a base model rambling in Russian."""
    rng = random.Random(seed)
    subjects = ["кино", "ужин", "работа", "отпуск", "кот", "погода", "встреча", "книжка"]
    return [" ".join(f"{rng.choice(['Ну', 'Слушай', 'Кстати', 'Ахах'])}, {rng.choice(subjects)} "
                     f"{rng.choice(['норм', 'супер', 'так себе', 'огонь'])} и {rng.choice(subjects)} тоже."
                     for _ in range(10)) for _ in range(count)]


def test_a_long_capitalised_ramble_in_your_words_does_not_pass_as_yours(monkeypatch):
    # On character n-grams alone (each TF-IDF row has length 1, and an n-gram does not know where it stands) the
    # texter's words in ten capitalised sentences pass as the texter's; the reply's habits beside them do not let it.
    texter, bot = two_styles(60, seed=1)
    held_texter, _ = two_styles(20, seed=2)
    candidates = {"tuned": held_texter, "ramble": rambles(20, seed=7)}
    log_words, log_lines = style_classifier.reply_habits(candidates["ramble"][0])[:2]
    assert log_words > math.log1p(40) and log_lines == pytest.approx(math.log(2))  # one line of over 40 words
    result = style_classifier.pass_as_yours(texter, bot, candidates, others_train=friend_lines(60, seed=5))
    assert result["ramble"] == 0.0 and result["tuned"] == 1.0
    monkeypatch.setattr(style_classifier, "reply_habits", lambda text: [0.0])
    ngrams_only = style_classifier.pass_as_yours(texter, bot, candidates, others_train=friend_lines(60, seed=5))
    assert ngrams_only["ramble"] == 1.0 and ngrams_only["tuned"] == 1.0


# ---------------------------------------------------------------------------------------------------------------
# The report


def n_words(n: int, word: str) -> str:
    return " ".join([word] * n)


def test_verdict_sentence_and_report_figures():
    person = [n_words(9, "ну")] * 3
    base = [n_words(50, "Certainly"), n_words(58, "Certainly")]
    tuned = [n_words(10, "ну"), n_words(12, "ну")]
    report = style.style_report(person, base, tuned)
    assert report["verdict"] == ("Your replies average 9 words, the base model's 54, the tuned model's 11. Style "
                                 "distance to yours (0 = the same, 1 = unrelated): base model 0.52, tuned model "
                                 "0.03. Furthest from you still: characters per reply (0.18).")
    # By hand: 26 characters against 29 and 35: W = (ln(30/27) + ln(36/27)) / 2 = 0.1966; 1 - exp(-W) = 0.178.
    assert report["averages"]["words"] == {"person": 9.0, "base": 54.0, "tuned": 11.0}
    assert report["pass_as_yours"] is None and report["distance"]["reference"] is None
    assert report["replies"] == {"person": 3, "base": 2, "tuned": 2, "person_train": 0, "base_train": 0,
                                 "others_train": 0}
    assert report["habits"]["script"]["distance"] == {"base": 1.0, "tuned": 0.0, "reference": None}
    assert report["distance"]["tuned"] < report["distance"]["base"]
    json.dumps(report)  # report.json takes it as it is


def test_report_with_classifier_reference_chart_and_html():
    person_train, base_train = two_styles(60, seed=3)
    person, base = two_styles(15, seed=4)
    tuned = person[:10] + base[:5]
    report = style.style_report(person, base, tuned, person_train, base_train)
    passes = report["pass_as_yours"]
    assert (passes["tuned"], passes["base"], passes["person"]) == (10 / 15, 0.0, 1.0)
    assert re.search(r"takes 67% of the tuned model's replies for yours, and 0% of the base model's\.",
                     report["verdict"]), report["verdict"]
    assert report["distance"]["reference"] < report["distance"]["tuned"] < report["distance"]["base"]
    assert report["typical_words"][0]["word"] in {"ахах", "ну", "слушай", "кстати"}

    png = style.habit_chart_png(report)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    fragment = style.style_html(report, png)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', fragment)
    assert len(images) == 1 and base64.b64decode(images[0]) == png
    assert "http" not in fragment and "<script" not in fragment
    assert "Your replies average" in fragment and "67%" in fragment
    table = style.style_table(report)
    assert table.splitlines()[-1] == "pass as yours: tuned 67%, base 0%, your held-out 100%"
    assert re.search(r"^overall\s+\d\.\d\d\s+\d\.\d\d\s+\d\.\d\d$", table.splitlines()[-2])


def test_report_needs_replies():
    with pytest.raises(ValueError, match="at least one tuned reply"):
        style.style_report(["a"], ["b"], [])


# ---------------------------------------------------------------------------------------------------------------
# The realistic personas, through the real importer


def prepared_replies(tmp_path: Path, persona: str, n: int) -> tuple[list[str], list[tuple[str, str]]]:
    """The persona's replies as prepare_dataset writes them (all in train), and its held-out (prompt, reply) pairs;
    no held-out prompt is in the training data."""
    import prepare_conversation_data as prep
    from ftg.config import load_config

    held = synthetic_exports.write_persona_dataset(tmp_path / "in", persona, n, seed=5)
    overrides = {"paths": {"models_dir": tmp_path / "no-models"}, "model": {"model": ""},
                 "data": {"input": str(tmp_path / "in"), "output": str(tmp_path / "data"), "eval_fraction": 0.0,
                          "me": [synthetic_exports.persona_me(persona)]}}
    out = prep.run(load_config(tmp_path / "no-config.yaml", overrides))
    examples = [json.loads(line) for line in (out / prep.TRAIN_FILE).read_text(encoding="utf-8").splitlines()]
    assert not {m["content"] for e in examples for m in e["messages"]} & {prompt for prompt, _ in held}
    return [e["messages"][-1]["content"] for e in examples], held


def test_texter_persona_is_a_combination_of_habits(tmp_path):
    replies, held = prepared_replies(tmp_path, "texter", 120)
    held_prompts = {prompt for prompt, _ in held}
    assert held_prompts and len(replies) > 150
    fp = style_fingerprint.fingerprint(replies)
    lines = fp["numeric"]["lines"]
    assert 0.4 < sum(n > 1 for n in lines) / len(lines) < 0.9  # bursts, merged one message per line
    share = {name: habit_share(fp, name) for name in ("lowercase", "no full stop", "))", "ахах", "english")}
    for name, value in share.items():  # every habit is common, none is constant
        assert 0.15 < value < 1, (name, share)
    assert share["no full stop"] > 0.9 and share["lowercase"] > 0.7
    assert sum(fp["numeric"]["words"]) / len(replies) < 15


def test_writer_persona_is_a_combination_of_habits(tmp_path):
    replies, held = prepared_replies(tmp_path, "writer", 80)
    fp = style_fingerprint.fingerprint(replies)
    assert sum(fp["numeric"]["emoji"]) == 0
    assert sum(fp["numeric"]["words"]) / len(replies) > 40
    sign_off = sum(reply.endswith("All the best,\nArthur") for reply in replies) / len(replies)
    assert 0.7 < sign_off < 0.97  # usually, not always
    assert fp["categorical"]["start"] == {"uppercase": len(replies)}
    assert any("\n\nAll the best,\nArthur" in reply for reply in replies)  # paragraphs survive the import
    assert held and all(reply.count("\n") >= 2 for _, reply in held)


def test_held_out_prompts_answered_again_draw_new_replies(tmp_path):
    """replies_per_prompt passes over the held-out prompts: the first pass is the one-reply list, and a person
    answering the same prompt again does not repeat themselves word for word."""
    once = synthetic_exports.write_persona_dataset(tmp_path / "a", "writer", 40, seed=5)
    thrice = synthetic_exports.write_persona_dataset(tmp_path / "b", "writer", 40, seed=5, replies_per_prompt=3)
    assert len(thrice) == 3 * len(once) and thrice[:len(once)] == once
    assert [prompt for prompt, _ in thrice] == [prompt for prompt, _ in once] * 3
    assert len({reply for _, reply in thrice}) > 2 * len(once)
    assert (tmp_path / "a" / "telegram" / "result.json").read_bytes() == \
        (tmp_path / "b" / "telegram" / "result.json").read_bytes()  # the training data does not change


def habit_share(fp: dict, name: str) -> float:
    replies = fp["replies"]
    ending, start = fp["categorical"]["ending"], fp["categorical"]["start"]
    if name == "lowercase":
        return start.get("lowercase", 0) / replies
    if name == "no full stop":
        return 1 - ending.get(".", 0) / replies
    if name == "))":
        return ending.get(")", 0) / replies
    words = fp["word_counts"]
    if name == "ахах":
        return (words.get("ахах", 0) + words.get("ахахах", 0) + words.get("хахах", 0)) / replies
    english = sum(words.get(w, 0) for w in ("weekend", "work", "meeting", "nice", "cool", "thanks", "ok",
                                           "course", "luck", "report", "series", "anyway", "btw"))
    return english / replies


def test_style_acceptance_persona_path_without_a_model(tmp_path, capsys):
    """The bench's own code around the model: --help, the training pairs it reads, its verdict and last line."""
    import style_acceptance as bench
    from ftg.paths import TRAIN_FILE

    with pytest.raises(SystemExit) as stopped:
        bench.main(["--help"])
    assert stopped.value.code == 0 and "--persona {sailor,texter,writer}" in capsys.readouterr().out

    _, held = prepared_replies(tmp_path, "texter", 60)
    everything = bench.last_exchanges(tmp_path / "data" / TRAIN_FILE, 10**6)
    pairs = bench.last_exchanges(tmp_path / "data" / TRAIN_FILE, 20, {everything[0][0]})
    assert len(pairs) == 20 and len({prompt for prompt, _ in pairs}) == 20
    assert pairs[0] == everything[1] and everything[0][0] not in {prompt for prompt, _ in pairs}

    # Scoring the replies of a run, and scoring them again from its json (--rescore), without a model.
    person_train, base_train = two_styles(60, seed=3)
    person, base = two_styles(15, seed=4)
    json_file = tmp_path / "work" / "output" / "style_acceptance.json"
    json_file.parent.mkdir(parents=True)

    def a_run(tuned: list[str]) -> dict:
        return {"marker": None, "ppl_base": 20.0, "ppl_tuned": 10.0, "prompts": 15, "replies_per_prompt": 1,
                "seconds": 60.0, "eval_conversations": 5,
                "samples": [{"prompt": "?", "person": p, "base": b, "tuned": t}
                            for p, b, t in zip(person, base, tuned)],
                "train_samples": [{"prompt": f, "person": p, "base": b}
                                  for f, p, b in zip(friend_lines(60, seed=5), person_train, base_train)]}

    result = bench.score(a_run(person[:12] + base[:3]))
    distance = result["style"]["distance"]
    line = (f"style_base={distance['base']:.2f} style_tuned={distance['tuned']:.2f} "
            "pass_tuned=80% pass_base=0% ppl_base=20.00 ppl_tuned=10.00")
    assert bench.summary_line(result) == line
    assert distance["tuned"] <= 0.4 * distance["base"] and bench.accepted(result)
    assert result["style"]["pass_as_yours"]["train"] == {"person": 60, "base": 60, "others": 60}
    capsys.readouterr()
    json_file.write_text(json.dumps(a_run(person[:12] + base[:3]), ensure_ascii=False), encoding="utf-8")
    assert bench.main(["--rescore", "--workdir", str(tmp_path / "work")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == line and printed[-2].startswith("ACCEPTED") and "pass-as-yours tuned >= 60%" in printed[-2]
    assert json.loads(json_file.read_text(encoding="utf-8"))["style"]["distance"] == distance
    json_file.write_text(json.dumps(a_run(person[:8] + base[:7]), ensure_ascii=False), encoding="utf-8")
    assert bench.main(["--rescore", "--workdir", str(tmp_path / "work")]) == 1  # 8 of 15 = 53 % pass: under 60 %
