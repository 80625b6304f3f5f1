"""Does it sound like you? A style fingerprint of a set of replies, the distance between two of them, and an
authorship classifier that says how many replies would pass as yours.

The fingerprint and the distances are in style_fingerprint.py, the classifier in style_classifier.py; this module
makes the report's figures of them and shows them.

Entry points for the report stage:
    style_report(person, base, tuned, person_train=(), base_train=(), others_train=()) -> dict    every figure
    habit_chart_png(report) -> bytes                                             one panel per habit (matplotlib PNG)
    style_html(report, chart_png=None, verdict=True) -> str                      a self-contained HTML fragment
    style_table(report) -> str                                                   the same figures as plain text
Plain Python and numpy, plus scikit-learn for the classifier and matplotlib for the chart; no model is needed.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from collections import Counter

import numpy as np

from ftg.style_classifier import pass_as_yours
from ftg.style_fingerprint import HABITS, distance, fingerprint, typical_words

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


# long: its Arguments/Returns docstring is 18 of its 64 lines; the work is 45
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


def style_html(report: dict, chart_png: bytes | None = None, verdict: bool = True) -> str:
    """The style section: the verdict (unless verdict=False: report.html leads the page with it already), the
    per-habit table, the pass-as-yours shares, the typical words and (when given) the chart as a data URI.
    Self-contained: nothing remote, no script."""
    parts = [f'<p class="verdict"><b>{_esc(report["verdict"])}</b></p>'] if verdict else []
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
