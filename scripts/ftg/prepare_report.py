"""What prepare_dataset accounts for and shows: the totals (every file, format and message), prepare_report.json,
the summary and the role check printed before training, and the histogram of example lengths."""

from __future__ import annotations

import contextlib
import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ftg.files import save_png


@dataclass
class Totals:
    files: list[dict] = field(default_factory=list)
    formats: Counter = field(default_factory=Counter)
    messages_read: int = 0
    messages_used: int = 0
    skipped: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=lambda: Counter(email=0, phone=0, card=0, url=0))
    conversations: int = 0
    conversations_used: dict = field(default_factory=lambda: {"train": 0, "eval": 0})
    examples: dict = field(default_factory=lambda: {"train": 0, "eval": 0})
    examples_duplicate: int = 0
    examples_shortened: int = 0
    lengths: array = field(default_factory=lambda: array("I"))


def make_report(totals: Totals, failed, ignored, input_dir, output_dir, measured_with, cfg) -> dict:
    lengths = sorted(totals.lengths)
    skipped = dict(sorted(totals.skipped.items(), key=lambda kv: -kv[1]))
    report = {
        "input": str(input_dir),
        "output": str(output_dir),
        "mode": cfg.data.mode,
        "me": list(cfg.data.me),
        "files_read": sum(1 for f in totals.files if f["status"] != "failed"),
        "files_failed": failed + [{"file": f["file"], "problem": f["problem"]} for f in totals.files
                                  if f["status"] == "failed"],
        "files_partly_read": [{"file": f["file"], "problem": f["problem"]} for f in totals.files
                              if f["status"] == "partial"],
        "files_not_chat_exports_by_name": ignored,
        "formats": dict(totals.formats),
        "files": totals.files,
        "conversations": totals.conversations,
        "conversations_train": totals.conversations_used["train"],
        "conversations_eval": totals.conversations_used["eval"],
        "messages_read": totals.messages_read,
        "messages_used": totals.messages_used,
        "messages_skipped": skipped,
        "pii_replaced": dict(totals.pii),
        "examples_train": totals.examples["train"],
        "examples_eval": totals.examples["eval"],
        "examples_duplicate_dropped": totals.examples_duplicate,
        "examples_shortened": totals.examples_shortened,
        "token_lengths": {
            "measured_with": measured_with,
            "limit": cfg.data.max_example_tokens,
            "max": lengths[-1] if lengths else 0,
            "mean": round(sum(lengths) / len(lengths), 1) if lengths else 0,
            "p95": lengths[int(0.95 * (len(lengths) - 1))] if lengths else 0,
        },
    }
    assert report["messages_read"] == report["messages_used"] + sum(skipped.values()), "message accounting is off"
    return report


def print_summary(report: dict) -> None:
    rows = [
        ("files read", report["files_read"]),
        ("files failed", len(report["files_failed"])),
        ("formats", ", ".join(f"{k} {v}" for k, v in report["formats"].items()) or "-"),
        ("conversations", report["conversations"]),
        ("messages read", report["messages_read"]),
        ("messages used", report["messages_used"]),
        *((f"  skipped: {reason}", n) for reason, n in report["messages_skipped"].items()),
        ("PII replaced", ", ".join(f"{k} {v}" for k, v in report["pii_replaced"].items())),
        ("examples train", report["examples_train"]),
        ("examples eval", report["examples_eval"]),
        ("duplicates dropped", report["examples_duplicate_dropped"]),
        ("longest example", f"{report['token_lengths']['max']} tokens (limit {report['token_lengths']['limit']})"),
    ]
    print()
    for label, value in rows:
        print(f"  {label:<28} {value:,}" if isinstance(value, int) else f"  {label:<28} {value}")


def print_role_check(train_file: Path, files: list[dict], pairs: int = 3, width: int = 50) -> None:
    """Three sample pairs and who wrote what, so a wrong voice (the roles the wrong way round) shows before
    training: "you" is the side the model learns to write."""
    def short(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "…"

    people: Counter = Counter()
    for entry in files:
        for speaker in entry.get("speakers", []):
            people[(speaker["name"], speaker["you"])] += speaker["messages"]
    if people:
        print("\n  Who is who (usable messages; \"you\" is the voice the model learns):")
        for (name, is_me), n in people.most_common(10):
            print(f"  {n:>9,}  {name or '(no name)'}" + ("  <- you" if is_me else ""))
    with contextlib.suppress(OSError), train_file.open(encoding="utf-8") as lines:
        samples = [json.loads(line)["messages"][-2:] for _, line in zip(range(pairs), lines)]
        if samples:
            print("\n  Sample pairs (them -> you); if \"you\" is not your voice, fix --me:")
        for prompt, reply in samples:
            print(f"    them: {short(prompt['content'])} → you: {short(reply['content'])}")


def save_histogram(lengths: array, limit: int, measured_with: str, path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts, edges = np.histogram(np.frombuffer(lengths, dtype=np.uint32), bins=50)  # no copy of the lengths
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.stairs(counts, edges, fill=True, color="#4c72b0")
    axes.axvline(limit, color="#c44e52", linestyle="--", label=f"limit {limit}")
    axes.set_xlabel("tokens per example" + ("" if measured_with.startswith("tokenizer") else " (estimated)"))
    axes.set_ylabel("examples")
    axes.set_title(f"Example lengths ({len(lengths):,} examples)")
    axes.legend()
    figure.tight_layout()
    save_png(figure, path, dpi=80)
