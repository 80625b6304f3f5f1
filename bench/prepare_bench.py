"""Benchmark of prepare_dataset on a synthetic 1,000,000-message export: messages per second and peak memory.

Writes a Telegram result.json and a ChatGPT export zip (half the messages each, streamed by
bench/synthetic_exports.py) into a temporary folder, runs scripts/prepare_conversation_data.py on them in a child
process, and prints the time, messages/s and the child's peak RSS. Goal on 2 cores: <= 60 s for 1M messages, with
memory flat in the input size (compare --messages 100000 with 1000000).

Run:
    python bench/prepare_bench.py                      1M messages, lengths estimated (no model)
    python bench/prepare_bench.py --messages 100000
    python bench/prepare_bench.py --model models/gemma-3-270m   lengths with the real tokenizer and chat template
    python bench/prepare_bench.py --export telegram_html     1M messages of Telegram Desktop HTML (1,000 a page)
    python bench/prepare_bench.py --export vk                1M messages of a VK archive (50 a page, Windows-1251)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_exports import (write_chatgpt_export, write_telegram_export, write_telegram_html_export,  # noqa: E402
                               write_vk_export)

ROOT = Path(__file__).resolve().parents[1]


def children_usage() -> tuple[float, float]:
    """(peak resident memory in MB, CPU seconds) of the finished child processes (POSIX only)."""
    try:
        import resource
    except ImportError:  # Windows
        return float("nan"), float("nan")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # Linux reports ru_maxrss in KB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000, help="total messages, split over the two exports")
    parser.add_argument("--model", default="", help="model folder whose tokenizer measures lengths (default: none)")
    parser.add_argument("--mode", default="instruct", choices=["instruct", "conversational"])
    parser.add_argument("--export", default="json", choices=["json", "telegram_html", "vk"],
                        help="json: Telegram result.json + ChatGPT zip (half each); or all of one HTML export")
    parser.add_argument("--folder", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
        work = args.folder or Path(tmp)
        dataset, data, no_models = work / "dataset", work / "data", work / "no-models"
        no_models.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if args.export == "json":
            n_telegram = write_telegram_export(dataset / "telegram" / "result.json", args.messages // 2)
            n_chatgpt = write_chatgpt_export(dataset / "chatgpt" / "chatgpt-export.zip", args.messages - n_telegram)
            made = f"{n_telegram:,} Telegram + {n_chatgpt:,} ChatGPT messages"
        elif args.export == "telegram_html":
            made = f"{write_telegram_html_export(dataset / 'telegram_html', args.messages):,} Telegram HTML messages"
        else:
            made = f"{write_vk_export(dataset / 'vk', args.messages):,} VK messages"
        size_mb = sum(p.stat().st_size for p in dataset.rglob("*") if p.is_file()) / 1e6
        print(f"generated {made} ({size_mb:,.0f} MB on disk) in {time.perf_counter() - started:.1f} s")

        # VK marks your own messages ("Вы", matched by --me owner); the others name the voice Sunny.
        command = [sys.executable, str(ROOT / "scripts" / "prepare_conversation_data.py"), "--input", str(dataset),
                   "--output", str(data), "--me", "owner" if args.export == "vk" else "Sunny", "--mode", args.mode,
                   "--models-dir", str(no_models)]
        if args.model:
            command += ["--model", args.model]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, encoding="utf-8")
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:])
            return result.returncode
        report = json.loads((data / "prepare_report.json").read_text(encoding="utf-8"))
        read = report["messages_read"]
        peak_mb, cpu_s = children_usage()
        # CPU time is shown too: on a shared machine the wall time also counts waiting for a core.
        print(f"prepare_dataset: {read:,} messages in {seconds:.1f} s wall ({cpu_s:.1f} s CPU) = "
              f"{read / seconds:,.0f} messages/s; peak RSS {peak_mb:,.0f} MB; "
              f"examples train {report['examples_train']:,}, "
              f"eval {report['examples_eval']:,}; lengths: {report['token_lengths']['measured_with'][:60]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
