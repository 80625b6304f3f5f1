"""What Studio shows, read from the files the stages write (ftg/paths.py names them); nothing here writes.

TensorBoard is read the way TensorBoard reads it: the run's event files, which finetune_gemma flushes as it trains,
so a reloaded page (or a restarted server) draws the same curve from the same run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ftg.errors import UserError
from ftg.paths import (EVAL_FILE, GGUF_REPORT, MAIN_GGUF, MODELFILE, PREPARE_REPORT, REPORT_JSON, RUN_FILE,
                       SELECTED_MODEL_FILE, TENSORBOARD_DIR, TRAIN_FILE, runs_dir)
from ftg.runs import find_run, read_run
from ftg.training_data import DataStats, iter_conversations

SAMPLE_PAIRS = 3
PAIR_CHARS = 160
"""Each side of a sample pair is cut to this many characters on the page."""


def read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def selected_model(models_dir: Path) -> dict:
    """models/selected_model.json ({} before download_model ran)."""
    return read_json(Path(models_dir) / SELECTED_MODEL_FILE)


def participants(report: dict) -> list[dict]:
    """[{"name", "messages", "you"}] over every file of the prepare report, most messages first."""
    people: dict[str, dict] = {}
    for entry in report.get("files", []):
        for speaker in entry.get("speakers", []):
            person = people.setdefault(speaker["name"], {"name": speaker["name"], "messages": 0, "you": False})
            person["messages"] += speaker.get("messages", 0)
            person["you"] = person["you"] or bool(speaker.get("you"))
    return sorted(people.values(), key=lambda p: -p["messages"])


def cut(text: str, limit: int = PAIR_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def conversations(path: Path) -> Iterator[list[dict]]:
    """The conversations of a data/*.jsonl file as the training stage reads them (ftg.training_data: a malformed line
    is skipped, the rest still read); none while the file does not exist yet."""
    return iter_conversations(path, DataStats()) if path.exists() else iter(())


def sample_pairs(data_dir: Path, count: int = SAMPLE_PAIRS) -> list[tuple[str, str]]:
    """(them, you) of the first examples in data/train_dataset.jsonl: the last user turn and the reply learned."""
    pairs = []
    for messages in conversations(Path(data_dir) / TRAIN_FILE):
        replies = [m for m in messages if m["role"] == "assistant"]
        prompts = [m for m in messages if m["role"] == "user"]
        if replies and prompts:
            pairs.append((cut(prompts[-1]["content"]), cut(replies[-1]["content"])))
        if len(pairs) == count:
            break
    return pairs


def prepared(data_dir: Path) -> dict:
    """The prepare step's summary: formats, the accounting line, participants, sample pairs ({} before it ran)."""
    report = read_json(Path(data_dir) / PREPARE_REPORT)
    if not report:
        return {}
    skipped = sum(report.get("messages_skipped", {}).values())
    return {"formats": report.get("formats", {}), "files": report.get("files", []),
            "messages_read": report.get("messages_read", 0), "messages_used": report.get("messages_used", 0),
            "skipped": skipped, "examples_train": report.get("examples_train", 0),
            "examples_eval": report.get("examples_eval", 0), "me": report.get("me", []),
            "people": participants(report), "pairs": sample_pairs(data_dir), "input": report.get("input", "")}


def latest_run(output_dir: Path) -> Path | None:
    try:
        return find_run(output_dir)
    except UserError:
        return None


def scalars(run_dir: Path) -> dict[str, list[tuple[float, int, float]]]:
    """{tag: [(wall time, step, value)]}, one per step, from the run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = Path(run_dir) / TENSORBOARD_DIR
    if not folder.exists():
        return {}
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    found = {}
    for tag in events.Tags()["tensors"]:  # the sample replies (SummaryWriter.add_text): markdown, newest last
        if tag.startswith("replies/"):  # stored as replies/<name>/text_summary
            found[tag.removesuffix("/text_summary")] = [(e.wall_time, e.step, text_of(e.tensor_proto)) for e in events.Tensors(tag)]
    for tag in events.Tags()["scalars"]:
        # A resumed run logs the steps after its checkpoint again (in a new event file): the later value wins, so a
        # step is never drawn twice.
        by_step = {e.step: (e.wall_time, e.step, e.value) for e in sorted(events.Scalars(tag), key=lambda e: e.wall_time)}
        found[tag] = sorted(by_step.values(), key=lambda point: point[1])
    return found


def text_of(tensor_proto) -> str:
    from tensorboard.util.tensor_util import make_ndarray

    value = make_ndarray(tensor_proto).reshape(-1)
    return value[0].decode("utf-8", errors="replace") if len(value) else ""


def training(output_dir: Path) -> dict:
    """The latest run: its name, status, loss curves, step, tokens/s and ETA ({} when there is no run)."""
    run_dir = latest_run(output_dir)
    if run_dir is None:
        return {}
    record = read_run(run_dir)
    found = scalars(run_dir)
    loss, eval_loss = found.get("train/loss", []), found.get("eval/loss", [])
    step = max([s for _, s, _ in loss + eval_loss], default=0)
    total = total_steps(record.settings, found.get("train/epoch", []))
    speed = found.get("train/tokens_per_second", [])
    replies = [(step, text) for tag in ("replies/base_model", "replies/fine_tuned") for _, step, text in found.get(tag, [])]
    return {"run": run_dir.name, "folder": str(run_dir), "status": record.status, "step": step, "total": total,
            "best_step": record.best_step, "best_eval_loss": record.best_eval_loss,
            "tokens_per_second": speed[-1][2] if speed else None, "eta_seconds": eta(loss, step, total),
            "replies": sorted(replies)[-2:], "loss": [[s, v] for _, s, v in loss], "eval_loss": [[s, v] for _, s, v in eval_loss]}


def total_steps(settings: dict, epochs_logged: list[tuple[float, int, float]]) -> int | None:
    """train.max_steps when set; otherwise steps per epoch (from the logged epoch) x train.epochs."""
    if settings.get("max_steps"):
        return int(settings["max_steps"])
    if epochs_logged and epochs_logged[-1][2] > 0:
        _, step, epoch = epochs_logged[-1]
        return round(step / epoch * float(settings.get("epochs", 1)))
    return None


def eta(loss: list[tuple[float, int, float]], step: int, total: int | None) -> float | None:
    """Seconds left, from the time per step between the first and the last train-loss log (model loading and
    the first evaluation are outside that span, so they do not inflate it)."""
    if not total or len(loss) < 2 or loss[-1][1] <= loss[0][1]:
        return None
    per_step = (loss[-1][0] - loss[0][0]) / (loss[-1][1] - loss[0][1])
    return max(0.0, (total - step) * per_step)


def resumable(output_dir: Path) -> str:
    """The latest run's name when it stopped before it finished (a stop, a crash, a killed server), else ''."""
    run_dir = latest_run(output_dir)
    if run_dir is None or not (run_dir / RUN_FILE).exists():
        return ""
    return run_dir.name if read_run(run_dir).status != "finished" else ""


def run_settings(output_dir: Path) -> dict:
    """The latest run's train settings (run.json): a resume must ask for the same run, not config.yaml's."""
    run_dir = latest_run(output_dir)
    return read_run(run_dir).settings if run_dir else {}


def exported(output_dir: Path) -> dict:
    """gguf_report.json's check table and the files to download ({} before convert ran)."""
    report = read_json(Path(output_dir) / GGUF_REPORT)
    if not report:
        return {}
    rows = []
    for entry in report.get("files", []):
        logits = entry.get("logits") or {}
        rows.append({"file": Path(entry.get("file", "")).name, "type": entry.get("type", ""),
                     "size_mb": round(entry.get("size_bytes", 0) / 1e6), "load": entry.get("load"),
                     "agreement": logits.get("top1_agreement"), "problems": entry.get("problems", []),
                     "reply": (entry.get("reply") or {}).get("text", "")})
    main = Path(output_dir) / MAIN_GGUF
    return {"status": report.get("status", ""), "rows": rows, "main": str(main) if main.exists() else "",
            "modelfile": (Path(output_dir) / MODELFILE).exists(), "folder": str(output_dir),
            "ladder": ladder_rows(report.get("ladder") or {}),
            "extra": {k: v for k, v in report.items() if k not in ("files", "reference", "status", "ladder")}}


def ladder_rows(ladder: dict) -> dict:
    """The quant ladder of gguf_report.json as convert's last lines and report.html show it: each file measured
    against F16 on your replies, kept or not, and the choice with its reason ({} when no ladder ran)."""
    from ftg.quant_ladder import kept_label

    if "rows" not in ladder:
        return {"reason": ladder.get("reason", ""), "rows": []} if ladder.get("reason") else {}
    rows = []
    for row in [ladder["baseline"], *ladder["rows"]]:
        style = row["style"]
        kept = kept_label(row, ladder["baseline"], ladder["rule"])
        rows.append({"type": row["type"], "size_mb": round(row["size_bytes"] / 1e6),
                     "top1": row["assistant"]["top1_agreement"], "distance": style["distance"],
                     "marker": style.get("marker_share"), "kept": kept, "chosen": row["type"] == ladder["choice"]})
    return {"reason": ladder["reason"], "choice": ladder["choice"], "rows": rows}


def report_summary(output_dir: Path) -> dict:
    """report.json: the verdict in words first, then the numbers (flattened to 'a.b: value' rows)."""
    report = read_json(Path(output_dir) / REPORT_JSON)
    if not report:
        return {}
    numbers = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers.append((prefix, round(value, 4)))

    walk("", {k: v for k, v in report.items() if k not in ("summary", "created")})
    return {"verdict": report.get("summary", ""), "numbers": numbers[:40], "created": report.get("created", "")}


def eval_prompts(data_dir: Path, count: int = 3) -> list[str]:
    """A few held-out user messages to suggest in the Talk step."""
    prompts = []
    for messages in conversations(Path(data_dir) / EVAL_FILE):
        users = [m for m in messages if m["role"] == "user"]
        if users:
            prompts.append(cut(users[-1]["content"], 200))
        if len(prompts) == count:
            break
    return prompts


def has_runs(output_dir: Path) -> bool:
    return any(runs_dir(output_dir).glob(f"*/{RUN_FILE}"))
