"""Does it sound like you? A style fingerprint of a set of replies, the distance between two of them, and an
authorship classifier that says how many replies would pass as yours.

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
prior (Monroe, Colaresi & Quinn 2008, "Fightin' Words"). "Would this pass as yours?" is a logistic regression
classifier (scikit-learn) on character n-gram TF-IDF and each reply's own habits (length, lines, how it opens and
ends, markdown), trained on the person's training replies against the base model's replies to the same prompts and
the other speakers' lines that prompted them.

Entry points for the report stage:
    style_report(person, base, tuned, person_train=(), base_train=(), others_train=()) -> dict    every figure
    habit_chart_png(report) -> bytes                                             one panel per habit (matplotlib PNG)
    style_html(report, chart_png=None) -> str                                    a self-contained HTML fragment
    style_table(report) -> str                                                   the same figures as plain text
Plain Python and numpy, plus scikit-learn for the classifier and matplotlib for the chart; no model is needed.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import time
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


# ---------------------------------------------------------------------------------------------------------------
# Would this pass as yours?

CLASSIFIER = {"analyzer": "char_wb", "ngram_range": [1, 4], "min_df": 2, "max_features": 50_000, "C": 4.0,
              "reply_habits": "standardised, block weighted 1/sqrt(columns)"}
"""Character 1-4-grams inside word boundaries (they see "))", "ахах", emoji, case and punctuation), at most 50,000
of them, beside the reply's own habits (reply_habits); logistic regression with C = 4 (weak regularisation: the two
classes are few hundred replies each)."""

ENDINGS = (".", "!", "?", "…", ")", "emoji", "other")
STARTS = ("lowercase", "uppercase", "other")
MARKS = ("list", "heading", "bold")


def reply_habits(text: str) -> list[float]:
    """One reply's habits as numbers, for the classifier: log(1 + words), log(1 + lines), log(1 + emoji), then 1/0
    for each way it can end (ENDINGS), start (STARTS) and each markdown structure (MARKS).

    Why: TF-IDF rows are scaled to length 1 and an n-gram does not know where in the reply it stands, so the
    n-grams alone cannot hear that a reply is six times too long or opens with a capital. A person hears both first.
    Measured on the texter bench (dev_log.txt, 2026-12-03, stop 26): 4 of 39 base replies passed on n-grams alone,
    Russian, all four opening with a capital (the texter's 95 % do not), three of 60 words (the texter's median is
    10); with these habits beside the n-grams, none."""
    words, lines, emoji = len(words_in(text)), line_count(text), len(emoji_in(text))
    end, start, marks = ending(text), start_case(text), markdown_marks(text)
    return ([math.log1p(words), math.log1p(lines), math.log1p(emoji)]
            + [float(end == name) for name in ENDINGS]
            + [float(start == name) for name in STARTS]
            + [float(name in marks) for name in MARKS])


def pass_as_yours(person_train: list[str], base_train: list[str], candidates: dict[str, list[str]],
                  others_train: list[str] = (), seed: int = 0) -> dict:
    """Train the authorship classifier on the person's training replies (1) against the base model's replies to the
    same prompts and the other speakers' lines that prompted them (0), then the share of each candidate set that it
    takes for the person's (probability >= 0.5).

    Why the other speakers: a chat partner writes the person's language and letters too, so a base reply in that
    language, or one that only echoes the prompt, looked like the person's to a classifier that knew the person and
    the base alone. A person would not take their friend's words for their own; with the friend's lines as
    negatives the classifier does not either. Measured on the texter bench, the same 13 base replies (dev_log.txt,
    2026-12-03): 3 passed without the friend's lines (one a copy of the prompt, two Russian -pt ramblings), 1 with.

    The features: the n-grams (each row of length 1) and reply_habits, standardised on the training replies and
    divided by sqrt(their number), so that the habits weigh about as much as the n-grams together.

    Returns {name: share for each candidate, "train": {"person": n, "base": n, "others": n}, "settings": CLASSIFIER}.
    Deterministic: the solver (liblinear) is seeded and the features do not depend on order.
    """
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    vectorizer = TfidfVectorizer(analyzer=CLASSIFIER["analyzer"], ngram_range=tuple(CLASSIFIER["ngram_range"]),
                                 min_df=CLASSIFIER["min_df"], max_features=CLASSIFIER["max_features"],
                                 sublinear_tf=True, lowercase=False, dtype=np.float32)
    scaler = StandardScaler()

    def features(replies: list[str], fit: bool = False):
        habits = np.array([reply_habits(reply) for reply in replies], dtype=np.float32)
        habits = (scaler.fit_transform(habits) if fit else scaler.transform(habits)) / math.sqrt(habits.shape[1])
        ngrams = vectorizer.fit_transform(replies) if fit else vectorizer.transform(replies)
        return hstack([ngrams, csr_matrix(habits)]).tocsr()

    negatives = list(base_train) + list(others_train)
    labels = np.array([1] * len(person_train) + [0] * len(negatives))
    model = LogisticRegression(C=CLASSIFIER["C"], solver="liblinear", class_weight="balanced", random_state=seed,
                               max_iter=1000)
    model.fit(features(list(person_train) + negatives, fit=True), labels)
    result = {}
    for name, replies in candidates.items():
        replies = list(replies)
        result[name] = float(np.mean(model.predict_proba(features(replies))[:, 1] >= 0.5)) if replies else None
    result["train"] = {"person": len(person_train), "base": len(base_train), "others": len(others_train)}
    result["settings"] = dict(CLASSIFIER)
    return result


# ---------------------------------------------------------------------------------------------------------------
# The report


def habit_summary(fp: dict, name: str, person_fp: dict) -> tuple[float, str]:
    """One number that shows a habit in the chart and the table, with its unit: the mean of a numeric habit, the
    share of the telling category of a categorical one (for openers, closers and emoji: the share that are among the
    person's five most used)."""
    kind, _ = HABITS[name]
    if kind == "numeric":
        values = fp["numeric"][name]
        return (float(np.mean(values)) if values else 0.0), "mean"
    counts = fp["categorical"][name]
    total = sum(counts.values()) or 1
    if name == "ending":
        return (total - counts.get(".", 0)) / total, "share not ending with ."
    if name == "start":
        return counts.get("lowercase", 0) / total, "share starting lowercase"
    if name == "script":
        return counts.get("cyrillic", 0) / total, "share of letters Cyrillic"
    if name == "markdown":
        return (fp["replies"] - counts.get("none", 0)) / fp["replies"], "share with markdown"
    favourites = [key for key, _ in sorted(person_fp["categorical"][name].items(), key=lambda kv: (-kv[1], kv[0]))
                  if key][:5]
    return sum(counts.get(key, 0) for key in favourites) / total, "share among your top 5"


def top(counts: dict, n: int = 5) -> list[list]:
    """The n most used categories, as [[category, count], ...] (ties broken alphabetically, so the output is stable)."""
    return [[key, count] for key, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if key][:n]


def verdict_text(averages: dict, overall: dict, passes: dict | None, furthest: tuple[str, float] | None) -> str:
    """The plain-words verdict that leads the report."""
    words = averages["words"]
    sentences = [f"Your replies average {round(words['person'])} words, the base model's {round(words['base'])}, "
                 f"the tuned model's {round(words['tuned'])}."]
    sentences.append(f"Style distance to yours (0 = the same, 1 = unrelated): base model {overall['base']:.2f}, "
                     f"tuned model {overall['tuned']:.2f}.")
    if passes:
        sentences.append(f"A classifier that knows your replies takes {passes['tuned']:.0%} of the tuned model's "
                         f"replies for yours, and {passes['base']:.0%} of the base model's.")
    if furthest:
        sentences.append(f"Furthest from you still: {furthest[0]} ({furthest[1]:.2f}).")
    return " ".join(sentences)


def style_report(person: list[str], base: list[str], tuned: list[str], person_train: list[str] = (),
                 base_train: list[str] = (), others_train: list[str] = ()) -> dict:
    """Every style figure for the report, JSON-serialisable.

    Arguments:
        person: the person's real replies to the held-out prompts.
        base, tuned: the base and the tuned model's replies to the same held-out prompts.
        person_train: the person's replies in the training data; with base_train they train the pass-as-yours
            classifier, and they give the reference distance (your training replies against your held-out ones:
            the closest a model can be expected to get). Without them both are None.
        base_train: the base model's replies to the prompts of person_train.
        others_train: the other speakers' lines that prompted person_train; more negatives for the classifier.
    Returns: {"replies": {set: n}, "averages": {"words"|"chars"|"lines"|"emoji": {"person"|"base"|"tuned": mean}},
        "habits": {habit: {"label", "kind", "summary": {"person"|"base"|"tuned": value}, "summary_label",
        "distance": {"base", "tuned", "reference"}}}, "distance": {"base", "tuned", "reference", "tuned_over_base"},
        "pass_as_yours": {"tuned", "base", "person", "train", "settings"} or None, "typical_words": [...],
        "top": {"emoji"|"opener"|"closer": {"person"|"base"|"tuned": [[value, count], ...]}}, "verdict": str,
        "seconds": float}.
    """
    started = time.perf_counter()
    for name, replies in (("person", person), ("base", base), ("tuned", tuned)):
        if not replies:
            raise ValueError(f"style_report needs at least one {name} reply")
    fps = {"person": fingerprint(person), "base": fingerprint(base), "tuned": fingerprint(tuned)}
    train_fp = fingerprint(person_train) if person_train else None
    distances = {"base": distance(fps["person"], fps["base"]), "tuned": distance(fps["person"], fps["tuned"]),
                 "reference": distance(fps["person"], train_fp) if train_fp else None}

    habits = {}
    for name, (kind, label) in HABITS.items():
        values = {side: habit_summary(fps[side], name, fps["person"]) for side in fps}
        habits[name] = {"label": label, "kind": kind, "summary": {side: round(v[0], 4) for side, v in values.items()},
                        "summary_label": values["person"][1],
                        "distance": {side: (round(d["habits"][name], 4) if d else None)
                                     for side, d in distances.items()}}
    overall = {side: (round(d["overall"], 4) if d else None) for side, d in distances.items()}
    overall["tuned_over_base"] = round(overall["tuned"] / overall["base"], 4) if overall["base"] else None
    averages = {name: {side: round(float(np.mean(fps[side]["numeric"][name])), 2) for side in fps}
                for name, (kind, _) in HABITS.items() if kind == "numeric"}

    passes = None
    if person_train and base_train:
        passes = pass_as_yours(person_train, base_train, {"tuned": tuned, "base": base, "person": person},
                               others_train)
    words_against = Counter(fps["base"]["word_counts"])
    if base_train:
        words_against += Counter(fingerprint(base_train)["word_counts"])
    own_words = Counter(fps["person"]["word_counts"]) + Counter(train_fp["word_counts"] if train_fp else {})
    furthest = max(((habits[name]["label"], habits[name]["distance"]["tuned"]) for name in habits),
                   key=lambda item: item[1])
    return {
        "replies": {"person": len(person), "base": len(base), "tuned": len(tuned),
                    "person_train": len(person_train), "base_train": len(base_train),
                    "others_train": len(others_train)},
        "averages": averages,
        "habits": habits,
        "distance": overall,
        "pass_as_yours": passes,
        "typical_words": typical_words(dict(own_words), dict(words_against)),
        "top": {name: {side: top(fps[side]["categorical"][key]) for side in fps}
                for name, key in (("emoji", "emoji_used"), ("opener", "opener"), ("closer", "closer"))},
        "verdict": verdict_text(averages, overall, passes, furthest if furthest[1] > 0 else None),
        "seconds": round(time.perf_counter() - started, 3),
    }


# ---------------------------------------------------------------------------------------------------------------
# Showing it

SIDES = (("person", "you", "#2e7d32"), ("base", "base model", "#9e9e9e"), ("tuned", "tuned model", "#1f5fa8"))


def habit_chart_png(report: dict) -> bytes:
    """One small panel per habit (you, the base model, the tuned model) and a last one with the overall distances;
    each panel's title carries the habit's distance to you. PNG bytes (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["habits"])
    columns = 4
    rows = math.ceil((len(names) + 1) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows))
    axes = axes.ravel()
    labels, colours = [label for _, label, _ in SIDES], [colour for _, _, colour in SIDES]
    for ax, name in zip(axes, names):
        habit = report["habits"][name]
        values = [habit["summary"][side] for side, _, _ in SIDES]
        ax.bar(labels, values, color=colours)
        for x, value in enumerate(values):
            ax.annotate(f"{value:.2f}" if value < 10 else f"{value:.0f}", (x, value), ha="center", va="bottom",
                        fontsize=8)
        d = habit["distance"]
        ax.set_title(f"{habit['label']}\ndistance base {d['base']:.2f}, tuned {d['tuned']:.2f}", fontsize=9)
        ax.set_ylabel(habit["summary_label"], fontsize=8)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.2)
    ax = axes[len(names)]
    overall = report["distance"]
    ax.bar(["base model", "tuned model"], [overall["base"], overall["tuned"]], color=colours[1:])
    if overall.get("reference") is not None:
        ax.axhline(overall["reference"], color=colours[0], linestyle="--", label="your own held-out replies")
        ax.legend(fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title("overall style distance to you", fontsize=9)
    ax.tick_params(labelsize=8)
    for ax in axes[len(names) + 1:]:
        ax.axis("off")
    # Fixed margins: tight_layout measures every label and took 5 of the chart's 7 s on a busy 2-core machine.
    figure.subplots_adjust(left=0.06, right=0.99, bottom=0.05, top=0.93, wspace=0.35, hspace=0.75)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()


def _esc(value) -> str:
    return html.escape(str(value))


def _share(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def style_html(report: dict, chart_png: bytes | None = None) -> str:
    """The style section for report.html: the verdict, the per-habit table, the pass-as-yours shares, the typical
    words and (when given) the chart as a data URI. Self-contained: nothing remote, no script."""
    parts = [f'<p class="verdict"><b>{_esc(report["verdict"])}</b></p>']
    passes = report["pass_as_yours"]
    if passes:
        parts.append(f"<p>Would it pass as yours? A classifier (character n-grams, logistic regression) trained on "
                     f"{passes['train']['person']} of your replies and {passes['train']['base']} of the base model's "
                     f"takes <b>{_share(passes['tuned'])}</b> of the tuned model's replies for yours, "
                     f"{_share(passes['base'])} of the base model's, and {_share(passes['person'])} of your own "
                     "held-out replies.</p>")
    else:
        parts.append('<p class="small">No pass-as-yours figure: it needs your training replies and the base '
                     "model's replies to the same prompts.</p>")
    if chart_png:
        parts.append(f'<img alt="style habits" src="data:image/png;base64,'
                     f'{base64.b64encode(chart_png).decode("ascii")}">')
    header = ["habit", "shown as", "you", "base model", "tuned model", "distance base", "distance tuned"]
    reference = report["distance"].get("reference") is not None
    if reference:
        header.append("distance of your own held-out replies")
    rows = []
    for habit in report["habits"].values():
        s, d = habit["summary"], habit["distance"]
        row = [habit["label"], habit["summary_label"], *(f"{s[k]:.2f}" for k in ("person", "base", "tuned")),
               f"{d['base']:.2f}", f"{d['tuned']:.2f}"] + ([f"{d['reference']:.2f}"] if reference else [])
        rows.append(row)
    overall = report["distance"]
    rows.append(["overall", "mean of the habits", "", "", "", f"{overall['base']:.2f}", f"{overall['tuned']:.2f}"]
                + ([f"{overall['reference']:.2f}"] if reference else []))
    parts.append("<table><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>"
                 + "".join("<tr>" + "".join(f'<td class="num">{_esc(v)}</td>' if i >= 2 else f"<td>{_esc(v)}</td>"
                                            for i, v in enumerate(row)) + "</tr>" for row in rows) + "</table>")
    parts.append('<p class="small">Distance per habit: 0 = the same as yours, 1 = unrelated (numbers: earth mover\'s '
                 "distance of log(1 + value), 0.5 = twice or half; categories: Jensen-Shannon distance).</p>")
    if report["typical_words"]:
        words = ", ".join(f"{row['word']} ({row['count']})" for row in report["typical_words"])
        parts.append(f"<p>Words most typical of you against the base model: {_esc(words)}.</p>")
    tops = report["top"]
    rows = [[what, *(" ".join(f"{value} ×{count}" for value, count in tops[key][side]) or "-"
                     for side, _, _ in SIDES)]
            for what, key in (("most used emoji", "emoji"), ("first words", "opener"), ("last words", "closer"))]
    parts.append("<table><tr><th></th><th>you</th><th>base model</th><th>tuned model</th></tr>"
                 + "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>" for row in rows)
                 + "</table>")
    return "".join(parts)


def style_table(report: dict) -> str:
    """The per-habit distances, the overall distance and the pass-as-yours shares as a plain-text table."""
    reference = report["distance"].get("reference") is not None
    lines = [f"{'habit':34} {'you':>8} {'base':>8} {'tuned':>8} {'d base':>7} {'d tuned':>7}"
             + (f" {'d self':>7}" if reference else "")]
    for habit in report["habits"].values():
        s, d = habit["summary"], habit["distance"]
        lines.append(f"{habit['label'][:34]:34} {s['person']:8.2f} {s['base']:8.2f} {s['tuned']:8.2f} "
                     f"{d['base']:7.2f} {d['tuned']:7.2f}" + (f" {d['reference']:7.2f}" if reference else ""))
    overall = report["distance"]
    lines.append(f"{'overall':34} {'':8} {'':8} {'':8} {overall['base']:7.2f} {overall['tuned']:7.2f}"
                 + (f" {overall['reference']:7.2f}" if reference else ""))
    passes = report["pass_as_yours"]
    if passes:
        lines.append(f"pass as yours: tuned {_share(passes['tuned'])}, base {_share(passes['base'])}, "
                     f"your held-out {_share(passes['person'])}")
    return "\n".join(lines)
