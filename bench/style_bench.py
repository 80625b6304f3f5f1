"""How long the style figures add to the report: fingerprint + distances + pass-as-yours classifier (style_report),
then the chart and the HTML fragment, on synthetic replies of the sizes a report sees (no model is run).

The person's replies come from a persona of bench/synthetic_exports.py; the "base model" replies imitate base
Gemma (long, markdown, "Certainly!"); the "tuned model" replies are the persona's with every fourth one a base-like
reply, so the figures are neither 0 nor 1. The issue's budget: at most 30 s on 2 cores for a few hundred replies.

Run:
    python bench/style_bench.py                          # texter, 300 training + 60 held-out replies per side
    python bench/style_bench.py --persona writer --train 1000 --held-out 200
The last line printed is
    style_seconds=S chart_seconds=C total_seconds=T
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

import synthetic_exports  # noqa: E402
from ftg import style  # noqa: E402

BASE_OPENERS = ["Certainly! ", "Okay, here's a breakdown. ", "That's a great question! ", "Of course. ", ""]
BASE_POINTS = ["Consider the context and what you want to achieve.", "Start small and build up gradually.",
               "Make sure you have everything you need before you begin.", "Ask for help if you get stuck.",
               "Take your time: there is no need to rush.", "Keep notes so you can learn from each attempt."]
BASE_ENDINGS = ["I hope this helps! Let me know if you have any other questions.",
                "Do you want me to go into more detail on any of these points?", "Enjoy! 😊", ""]


def base_like_reply(rng: random.Random, prompt: str) -> str:
    """A reply in base Gemma's manner: an opener, a bold heading, a bulleted list, an offer to help."""
    points = rng.sample(BASE_POINTS, rng.randint(2, 4))
    return (f"{rng.choice(BASE_OPENERS)}Here are some thoughts on \"{prompt}\":\n\n**Key points:**\n\n"
            + "\n".join(f"* {point}" for point in points) + f"\n\n{rng.choice(BASE_ENDINGS)}").strip()


def replies(persona: str, n: int, seed: int) -> tuple[list[str], list[str]]:
    """n (person reply, base-like reply) pairs to the same prompts."""
    _, lang, make_reply, extra = synthetic_exports.PERSONAS[persona]
    rng = random.Random(seed)
    pool = [(p, r) for p, r, item_lang in synthetic_exports.content_pool() if item_lang == lang]
    pool += [(p, [r]) for p, r in extra]
    person, base = [], []
    for _ in range(n):
        prompt, options = rng.choice(pool)
        person.append(synthetic_exports.imported_text(make_reply(rng, rng.choice(options))))
        base.append(base_like_reply(rng, prompt))
    return person, base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persona", choices=list(synthetic_exports.PERSONAS), default="texter")
    parser.add_argument("--train", type=int, default=300, help="training replies per side (person, base)")
    parser.add_argument("--held-out", type=int, default=60, help="held-out replies per side (person, base, tuned)")
    args = parser.parse_args(argv)

    person_train, base_train = replies(args.persona, args.train, seed=1)
    person, base = replies(args.persona, args.held_out, seed=2)
    tuned_person, tuned_base = replies(args.persona, args.held_out, seed=3)
    tuned = [b if i % 4 == 3 else p for i, (p, b) in enumerate(zip(tuned_person, tuned_base))]

    started = time.perf_counter()
    report = style.style_report(person, base, tuned, person_train, base_train)
    style_seconds = time.perf_counter() - started
    started = time.perf_counter()
    style.style_html(report, style.habit_chart_png(report))
    chart_seconds = time.perf_counter() - started

    print(f"{args.persona}: {args.train} training replies per side, {args.held_out} held-out per side")
    print(style.style_table(report))
    print(report["verdict"])
    print(f"style_seconds={style_seconds:.2f} chart_seconds={chart_seconds:.2f} "
          f"total_seconds={style_seconds + chart_seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
