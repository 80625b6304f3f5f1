"""A style fingerprint of a set of replies and the distance between two of them (the report's figures are made of
them in style.py; the pass-as-yours classifier is in style_classifier.py).

A person's style is many small habits at once, so a fingerprint holds each of them (HABITS below):
    numeric, one value per reply:   words, characters, lines, emoji
    categorical, a distribution:    the last character, the first letter's case, Cyrillic/Latin letters, markdown
                                    structure (lists, headings, bold), openers, closers, the emoji used
The distance between two fingerprints is computed per habit, each in [0, 1] (0: the same, 1: unrelated), and the
overall distance is their mean:
    numeric      1 - exp(-W), W = the Wasserstein-1 (earth mover's) distance between the two sets of log(1 + value):
                 W is about the typical |log ratio|, so 0.5 means "twice (or half) as long", 0.75 "four times".
    categorical  the Jensen-Shannon distance (square root of the divergence, base-2 logs): 1 for disjoint categories.
The words most typical of the person against the base model are ranked by log-odds with an informative Dirichlet
prior (Monroe, Colaresi & Quinn 2008, "Fightin' Words"). Plain Python and numpy.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# Reading one reply

# An emoji is one picture: a base character with optional skin tone / variation selector, ZWJ sequences joined, or a
# pair of regional indicators (a flag). Text symbols such as © or ™ are not counted; ❤ ⚓ ☀ ✅ (U+2600-27BF) are.
_EMOJI_BASE = ("[\U0001F300-\U0001F5FF\U0001F600-\U0001F64F\U0001F680-\U0001F6FF\U0001F900-\U0001F9FF"
               "\U0001FA70-\U0001FAFF\u2600-\u27BF\u2B50\u2B55\u2B1B\u2B1C\u2934\u2935\u3297\u3299]")
_EMOJI_TAIL = "[\uFE0F\U0001F3FB-\U0001F3FF]*"
EMOJI = re.compile(f"[\U0001F1E6-\U0001F1FF]{{2}}|{_EMOJI_BASE}{_EMOJI_TAIL}(?:\u200d{_EMOJI_BASE}{_EMOJI_TAIL})*")
WORD = re.compile(r"\w+(?:['’-]\w+)*")
"""A word: letters or digits, with inner apostrophes or hyphens ("don't", "чак-чак")."""
TOKEN = re.compile(f"{EMOJI.pattern}|{WORD.pattern}")
"""What an opener or a closer is: the first or last word or emoji of a reply."""
LIST_LINE = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+\S")
HEADING_LINE = re.compile(r"^\s*#{1,6}\s+\S")
BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


def emoji_in(text: str) -> list[str]:
    """The emoji of a text in order, each as it was written ("👍🏽" is one)."""
    return EMOJI.findall(text)


def words_in(text: str) -> list[str]:
    """The words of a text, lowercased."""
    return [word.lower() for word in WORD.findall(text)]


def ending(text: str) -> str:
    """How a reply ends: ".", "!", "?", "…" (also "..."), ")" (also "))" and ":)"), "emoji" or "other"."""
    text = text.rstrip()
    if not text:
        return "other"
    if text.endswith(("…", "...")):
        return "…"
    last_emoji = None
    for last_emoji in EMOJI.finditer(text):
        pass
    if last_emoji and last_emoji.end() == len(text):
        return "emoji"
    return text[-1] if text[-1] in ".!?)" else "other"


def start_case(text: str) -> str:
    """"lowercase" or "uppercase" when the reply's first character is a letter, else "other" (digit, emoji, ...)."""
    text = text.lstrip()
    if not text or not text[0].isalpha():
        return "other"
    return "lowercase" if text[0].islower() else "uppercase"


def script_letters(text: str) -> Counter:
    """The reply's letters counted by script: "cyrillic", "latin" or "other"."""
    letters = Counter()
    for char in text:
        if char.isalpha():
            name = unicodedata.name(char, "")
            script = "cyrillic" if name.startswith("CYRILLIC") else "latin" if name.startswith("LATIN") else "other"
            letters[script] += 1
    return letters


def markdown_marks(text: str) -> list[str]:
    """The markdown structures of a reply ("list", "heading", "bold"), or ["none"]."""
    lines = text.splitlines()
    marks = [name for name, found in (("list", any(LIST_LINE.match(line) for line in lines)),
                                      ("heading", any(HEADING_LINE.match(line) for line in lines)),
                                      ("bold", bool(BOLD.search(text)))) if found]
    return marks or ["none"]


def opener_closer(text: str) -> tuple[str, str]:
    """The first and last word or emoji of a reply, lowercased ("" for a reply without any)."""
    tokens = TOKEN.findall(text)
    return (tokens[0].lower(), tokens[-1].lower()) if tokens else ("", "")


def line_count(text: str) -> int:
    """Non-empty lines: a messenger burst of three messages, merged by the importer, is three lines."""
    return sum(1 for line in text.splitlines() if line.strip())


# ---------------------------------------------------------------------------------------------------------------
# The fingerprint

HABITS = {
    # name: (kind, what it is, in words for the report)
    "words": ("numeric", "words per reply"),
    "chars": ("numeric", "characters per reply"),
    "lines": ("numeric", "lines per reply"),
    "emoji": ("numeric", "emoji per reply"),
    "ending": ("categorical", "last character"),
    "start": ("categorical", "first letter"),
    "script": ("categorical", "Cyrillic / Latin letters"),
    "markdown": ("categorical", "markdown (lists, headings, bold)"),
    "opener": ("categorical", "first word"),
    "closer": ("categorical", "last word or emoji"),
    "emoji_used": ("categorical", "which emoji"),
}
"""Every habit of a fingerprint, in the order of the report."""


def fingerprint(replies: list[str]) -> dict:
    """The habits of a set of replies: {"replies": n, "numeric": {habit: [value per reply]},
    "categorical": {habit: {category: count}}, "word_counts": {word: count}}. JSON-serialisable."""
    numeric = {name: [] for name, (kind, _) in HABITS.items() if kind == "numeric"}
    categorical = {name: Counter() for name, (kind, _) in HABITS.items() if kind == "categorical"}
    word_counts = Counter()
    for reply in replies:
        words, emoji = words_in(reply), emoji_in(reply)
        numeric["words"].append(len(words))
        numeric["chars"].append(len(reply.strip()))
        numeric["lines"].append(line_count(reply))
        numeric["emoji"].append(len(emoji))
        categorical["ending"][ending(reply)] += 1
        categorical["start"][start_case(reply)] += 1
        categorical["script"].update(script_letters(reply))
        categorical["markdown"].update(markdown_marks(reply))
        opener, closer = opener_closer(reply)
        categorical["opener"][opener] += 1
        categorical["closer"][closer] += 1
        categorical["emoji_used"].update(emoji)
        word_counts.update(words)
    return {"replies": len(replies), "numeric": numeric,
            "categorical": {name: dict(counts) for name, counts in categorical.items()},
            "word_counts": dict(word_counts)}


# ---------------------------------------------------------------------------------------------------------------
# Distances


def wasserstein(a, b) -> float:
    """The Wasserstein-1 distance between two samples: the area between their empirical CDFs."""
    a, b = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    points = np.concatenate([a, b])
    points.sort()
    cdf_a = np.searchsorted(a, points[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(b, points[:-1], side="right") / len(b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(points)))


def numeric_distance(a, b) -> float:
    """1 - exp(-W) on log(1 + value): 0 for the same distribution, 0.5 when one is typically twice the other."""
    if not len(a) or not len(b):
        return 0.0 if len(a) == len(b) else 1.0
    return 1.0 - math.exp(-wasserstein(np.log1p(a), np.log1p(b)))


def js_distance(p: dict, q: dict) -> float:
    """The Jensen-Shannon distance between two count tables (base 2, so in [0, 1]); two empty tables are the same,
    an empty one and a non-empty one are unrelated."""
    p_total, q_total = sum(p.values()), sum(q.values())
    if not p_total or not q_total:
        return 0.0 if p_total == q_total else 1.0
    keys = sorted(set(p) | set(q))
    pv = np.array([p.get(k, 0) for k in keys], dtype=float) / p_total
    qv = np.array([q.get(k, 0) for k in keys], dtype=float) / q_total
    mid = (pv + qv) / 2

    def kl(x):
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / mid[mask])))

    return math.sqrt(max(0.0, (kl(pv) + kl(qv)) / 2))


def distance(a: dict, b: dict) -> dict:
    """Distance between two fingerprints: {"habits": {habit: d}, "overall": mean of the habits}, each in [0, 1]."""
    habits = {}
    for name, (kind, _) in HABITS.items():
        if kind == "numeric":
            habits[name] = numeric_distance(a["numeric"][name], b["numeric"][name])
        elif name == "emoji_used" and not (a["categorical"][name] and b["categorical"][name]):
            # Which emoji only means something when both use some; how many is the "emoji" habit's, so a person
            # without emoji against a model with a few is not also "unrelated" here.
            habits[name] = 0.0
        else:
            habits[name] = js_distance(a["categorical"][name], b["categorical"][name])
    return {"habits": habits, "overall": sum(habits.values()) / len(habits)}


# ---------------------------------------------------------------------------------------------------------------
# The words typical of the person

PRIOR_WORDS = 1000
"""Strength of the informative prior, in pseudo-words spread over the pooled vocabulary by frequency: a word seen a
few times in only one set stays near z = 0 instead of topping the list."""


def typical_words(counts: dict, other: dict, top: int = 15, min_count: int = 2) -> list[dict]:
    """Words most typical of `counts` against `other`: log-odds ratio with an informative Dirichlet prior (the pooled
    frequencies), divided by its standard deviation (Monroe et al. 2008, eq. 16-22). Returns
    [{"word", "z", "count", "other_count"}] for the `top` highest z among words used at least `min_count` times."""
    n1, n2 = sum(counts.values()), sum(other.values())
    if not n1 or not n2:
        return []
    pooled = Counter(counts) + Counter(other)
    total = n1 + n2
    rows = []
    for word, pooled_count in pooled.items():
        y1, y2 = counts.get(word, 0), other.get(word, 0)
        if y1 < min_count:
            continue
        alpha = PRIOR_WORDS * pooled_count / total
        delta = (math.log((y1 + alpha) / (n1 + PRIOR_WORDS - y1 - alpha))
                 - math.log((y2 + alpha) / (n2 + PRIOR_WORDS - y2 - alpha)))
        z = delta / math.sqrt(1 / (y1 + alpha) + 1 / (y2 + alpha))
        rows.append({"word": word, "z": round(z, 3), "count": y1, "other_count": y2})
    rows.sort(key=lambda row: (-row["z"], row["word"]))
    return [row for row in rows[:top] if row["z"] > 0]
