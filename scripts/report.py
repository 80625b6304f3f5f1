"""Write the style report: output/report.html, one page that shows whether the model learned your style.

Reads (each part is optional; a missing one becomes a note that names the step that makes it):
    data/prepare_report.json, token_lengths.png      prepare_dataset: the data summary
    output/runs/<latest run>/                        finetune_gemma: run.json and the TensorBoard train/eval loss
    data/eval_dataset.jsonl                          prepare_dataset: the held-out conversations
    output/finetuned_gemma.gguf                      convert_to_gguf: the tuned model
    the base model folder                            converted once to output/base_model.gguf (ftg/gguf_make.py)
    output/gguf_report.json                          convert_to_gguf: the GGUF check figures
    data/train_dataset.jsonl                         prepare_dataset: prompts for the "pass as yours?" classifier
Writes:  output/report.html, self-contained: the charts are PNGs inside the file (data URIs), there is no external
         CSS or script, so it opens offline and can be mailed as one file.
         output/report.json, the same figures for scripts.

The page leads with the verdict in plain words ("Your replies average 9 words, the base model's 54, the tuned
model's 11."), then the style fingerprint of your real held-out replies, the base model's and the tuned model's
(ftg/style.py: lengths, lines, emoji, endings, lowercase starts, script, markdown, openers and closers), with a
distance per habit and overall, and the share of replies that an authorship classifier takes for yours.

Perplexity is computed by llama.cpp on the two GGUFs (base and tuned, the same quant type) over the last reply of
each held-out conversation: exp(mean negative log-likelihood per token of the reply and its <end_of_turn>); the
earlier turns are context only. Lower means your real replies surprise the model less. The replies are sampled as
chat samples them (chat.temperature, 0.7 by default), reply i with seed i, so the report is the same each time it is
made from the same files (ftg/gguf_run.py: sample_replies says why not greedy).

Run:
    python scripts/report.py                      (convert_to_gguf and run_demo write it too)
    python scripts/report.py --report-samples 20 --run 2026-11-28_1412
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import sys
import time
from pathlib import Path

from ftg.config import add_config_arguments, config_from_args, describe
from ftg.errors import UserError, run_main
from ftg import style
from ftg.files import write_json, write_text_atomic
from ftg.gguf_make import ensure_base_gguf
from ftg.gguf_run import missing_gguf_hint, reply_perplexity, sample_replies
from ftg.paths import (EVAL_FILE, GGUF_REPORT, LENGTHS_PLOT, LOSS_PLOT, MAIN_GGUF, PREPARE_REPORT, REPORT_HTML,
                       REPORT_JSON, TENSORBOARD_DIR, TRAIN_FILE)
from ftg.runs import find_run, read_run
from ftg.training_data import reply_conversations

SECTIONS = ["paths", "model", "export", "chat"]

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 4px 8px;
  vertical-align: top; text-align: left; } th { background: #f3f3f3; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.missing { background: #fff4e5; border-left: 4px solid #f0a030; padding: 0.6em 1em; }
.good { color: #1a7f37; font-weight: bold; } .bad { color: #c62828; font-weight: bold; }
.replies td { width: 25%; } .text { white-space: pre-wrap; word-wrap: break-word; }
.role { color: #777; font-size: 0.85em; } img { max-width: 100%; } .small { color: #666; font-size: 0.9em; }
"""


# ----------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------


def loss_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{"train/loss": [(step, loss), ...], "eval/loss": [...]} from the run's TensorBoard events (Trainer's tags)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = run_dir / TENSORBOARD_DIR
    if not folder.is_dir():
        return {}
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0 = keep every point
    events.Reload()
    curves = {}
    for tag in ("train/loss", "eval/loss"):
        if tag in events.Tags()["scalars"]:
            # A resumed run logs the steps after its checkpoint again: the later value wins.
            points = {event.step: event.value for event in events.Scalars(tag)}
            curves[tag] = sorted((step, value) for step, value in points.items() if math.isfinite(value))
    return curves


# ----------------------------------------------------------------------------------------------------------------
# HTML pieces
# ----------------------------------------------------------------------------------------------------------------


def esc(value) -> str:
    return html.escape(str(value))


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_png(draw) -> bytes:
    """draw(axes) on a fresh matplotlib figure, returned as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4))
    draw(axes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"num\">{esc(v)}</td>" if i in numeric else f"<td>{esc(v)}</td>"
                         for i, v in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def read_json(path: Path, made_by: str) -> dict:
    if not path.exists():
        raise UserError(f"{path} is missing: {made_by} makes it.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({exc}): run {made_by} again.") from None


def counts(mapping) -> str:
    return ", ".join(f"{key} {value:,}" for key, value in (mapping or {}).items()) or "none"


# ----------------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------------


def data_section(cfg) -> str:
    data_dir = cfg.paths.data_dir
    report = read_json(data_dir / PREPARE_REPORT, "prepare_dataset")
    lengths = report.get("token_lengths", {})
    rows = [
        ["input folder", report.get("input", "?")],
        ["mode", report.get("mode", "?")],
        ["files read", report.get("files_read", "?")],
        ["files failed", len(report.get("files_failed", []))],
        ["formats", counts(report.get("formats"))],
        ["conversations (train / eval)",
         f"{report.get('conversations', '?')} ({report.get('conversations_train', '?')} / "
         f"{report.get('conversations_eval', '?')})"],
        ["messages read", report.get("messages_read", "?")],
        ["messages used", report.get("messages_used", "?")],
        ["messages skipped", counts(report.get("messages_skipped"))],
        ["personal data replaced", counts(report.get("pii_replaced"))],
        ["examples train / eval", f"{report.get('examples_train', '?')} / {report.get('examples_eval', '?')}"],
        ["duplicates dropped", report.get("examples_duplicate_dropped", "?")],
        ["example length (tokens)", f"mean {lengths.get('mean', '?')}, 95% under {lengths.get('p95', '?')}, "
                                    f"longest {lengths.get('max', '?')}, limit {lengths.get('limit', '?')}"],
    ]
    parts = [table(["", "value"], rows)]
    failed = report.get("files_failed", [])
    if failed:
        parts.append("<p>Files that could not be read:</p>"
                     + table(["file", "problem"], [[f.get("file", "?"), f.get("problem", "?")] for f in failed]))
    histogram = data_dir / LENGTHS_PLOT
    if histogram.exists():
        parts.append(f'<img alt="example lengths" src="{png_data_uri(histogram.read_bytes())}">')
    return "".join(parts)


def training_section(cfg, run_name: str) -> str:
    run_dir = find_run(cfg.paths.output_dir, run_name)
    info = read_run(run_dir)
    best_loss = info.best_eval_loss
    rows = [["run", info.run_name], ["base model", info.base_model], ["status", info.status],
            ["steps", info.last_step or "-"], ["best step", info.best_step or "-"],
            ["best eval loss", "-" if best_loss is None else f"{best_loss:.4f}"]]
    parts = [table(["", "value"], rows)]
    curves = loss_curves(run_dir)
    if curves:
        def draw(axes):
            if "train/loss" in curves:
                axes.plot(*zip(*curves["train/loss"]), ".-", markersize=3, label="train loss", alpha=0.7)
            if "eval/loss" in curves:
                axes.plot(*zip(*curves["eval/loss"]), "o-", label="eval loss (held-out)")
            axes.set_xlabel("step")
            axes.set_ylabel("loss (nats per reply token)")
            axes.grid(alpha=0.3)
            axes.legend()

        parts.append(f'<img alt="loss curves" src="{png_data_uri(figure_png(draw))}">')
        parts.append('<p class="small">The eval loss at step 0 is the base model\'s. It should fall, then level off; '
                     "if it rises while the train loss keeps falling, the model memorises (fewer epochs help).</p>")
    elif (run_dir / LOSS_PLOT).exists():
        parts.append(f'<img alt="loss curves" src="{png_data_uri((run_dir / LOSS_PLOT).read_bytes())}">')
    else:
        parts.append(missing(f"No loss values logged yet in {run_dir / TENSORBOARD_DIR}: let finetune_gemma reach its "
                             "first log step."))
    return "".join(parts)


def model_replies(cfg) -> dict:
    """Everything the style section shows, computed by llama.cpp on the GGUFs (base and tuned, the same quant type):
    {"conversations": held-out answered, "perplexity": {model: figures}, "replies": {model: [reply, ...]},
     "train": training conversations for the classifier, "base_train": the base's replies to them,
     "base_problem": why the base could not be compared, or ""}."""
    chat_cfg = cfg.chat
    answered_count = max(chat_cfg.report_style_replies, chat_cfg.report_samples)
    conversations = reply_conversations(cfg.paths.data_dir / EVAL_FILE,
                                        max(chat_cfg.report_eval_examples, answered_count))
    tuned = cfg.paths.output_dir / MAIN_GGUF
    if not tuned.exists():
        raise UserError(f"{tuned} is missing. {missing_gguf_hint(cfg.paths.output_dir)}")
    scored, answered = conversations[: chat_cfg.report_eval_examples], conversations[:answered_count]
    # The tuned file first: converting the base is wasted when the tuned file is broken.
    found = {"conversations": answered, "perplexity": {}, "replies": {}, "train": [], "base_train": [],
             "base_problem": ""}
    found["perplexity"]["tuned"] = reply_perplexity(tuned, scored, chat_cfg.n_gpu_layers, "perplexity tuned")
    found["replies"]["tuned"] = sample_replies(tuned, answered, chat_cfg, "replies tuned")
    try:
        base = ensure_base_gguf(cfg)
    except UserError as exc:
        found["base_problem"] = f"The base model could not be compared: {exc}"
        return found
    found["perplexity"]["base"] = reply_perplexity(base, scored, chat_cfg.n_gpu_layers, "perplexity base")
    found["replies"]["base"] = sample_replies(base, answered, chat_cfg, "replies base")
    train_file = cfg.paths.data_dir / TRAIN_FILE
    if chat_cfg.report_classifier_prompts > 0 and train_file.exists():
        found["train"] = reply_conversations(train_file, chat_cfg.report_classifier_prompts)
        found["base_train"] = sample_replies(base, found["train"], chat_cfg, "replies base, training prompts")
    return found


def perplexity_html(figures: dict) -> tuple[str, str]:
    """The perplexity table and chart; (html, one-line summary)."""
    rows = [[name, f"{figures[name]['perplexity']:.2f}", f"{figures[name]['mean_nll']:.4f}",
             f"{figures[name]['perplexity_with_stop']:.2f}", figures[name]["tokens"]]
            for name in ("base", "tuned") if name in figures]
    parts = [f"<p>Perplexity on the last reply of {figures['tuned']['conversations']} held-out conversations, computed "
             "by llama.cpp on the GGUF files; lower is better. The last column also scores the end-of-turn token "
             "that ends each reply, which a base model finds very unlikely.</p>",
             table(["model", "perplexity", "nats per token", "with end of turn", "reply tokens"], rows, {1, 2, 3, 4})]
    summary = f"tuned perplexity {figures['tuned']['perplexity']:.2f}"
    if "base" in figures:
        change = figures["tuned"]["perplexity"] / figures["base"]["perplexity"] - 1
        summary = (f"perplexity on held-out replies: base {figures['base']['perplexity']:.2f} → tuned "
                   f"{figures['tuned']['perplexity']:.2f} ({change:+.0%})")
        parts.append(f'<p class="{"good" if change < 0 else "bad"}">{esc(summary)}</p>')

        def draw(axes):
            axes.bar(["base", "tuned"], [figures["base"]["perplexity"], figures["tuned"]["perplexity"]],
                     color=["#999999", "#4c72b0"])
            axes.set_ylabel("perplexity on held-out replies")

        parts.append(f'<img alt="perplexity" style="max-width: 500px" src="{png_data_uri(figure_png(draw))}">')
    return "".join(parts), summary


def replies_html(shown: list[list[dict]], replies: dict, chat_cfg) -> str:
    how = (f"sampled as chat samples them (temperature {chat_cfg.temperature:g}, reply i with seed i)"
           if chat_cfg.temperature > 0 else "greedy")
    parts = [f"<h3>{len(shown)} held-out conversations</h3><p class=\"small\">Replies {how}, at most "
             f"{chat_cfg.report_reply_tokens} tokens; neither model saw these conversations in training.</p>"]
    header = "<tr><th>conversation</th><th>real reply</th><th>base model</th><th>fine-tuned</th></tr>"
    rows = []
    for number, messages in enumerate(shown):
        context = "".join(f'<div><span class="role">{esc(m["role"])}:</span> <span class="text">{esc(m["content"])}'
                          f"</span></div>" for m in messages[:-1][-3:])  # the last 3 turns are enough to follow
        base_reply = replies["base"][number] if "base" in replies else "(not available)"
        cells = [messages[-1]["content"], base_reply, replies["tuned"][number]]
        rows.append(f"<tr><td>{context}</td>" + "".join(f'<td class="text">{esc(c)}</td>' for c in cells) + "</tr>")
    parts.append(f'<table class="replies">{header}{"".join(rows)}</table>')
    return "".join(parts)


def style_section(cfg) -> tuple[str, str, dict]:
    """The verdict, the style fingerprint, the perplexity and the side-by-side replies; returns (html, the verdict
    for the top of the page, the figures for report.json)."""
    found = model_replies(cfg)
    replies, conversations = found["replies"], found["conversations"]
    parts = [missing(found["base_problem"])] if found["base_problem"] else []
    figures = {"perplexity": found["perplexity"]}
    verdict = ""
    if "base" in replies:
        fingerprint = style.style_report(
            [m[-1]["content"] for m in conversations], replies["base"], replies["tuned"],
            [m[-1]["content"] for m in found["train"]], found["base_train"],
            [m[-2]["content"] for m in found["train"]])  # the other speaker's line that each reply answers
        figures["style"] = fingerprint
        verdict = fingerprint["verdict"]
        # verdict=False: the page itself leads with the verdict (it was printed twice).
        parts.append(style.style_html(fingerprint, style.habit_chart_png(fingerprint), verdict=False))
    perplexity, summary = perplexity_html(found["perplexity"])
    parts.append(perplexity)
    parts.append(replies_html(conversations[: cfg.chat.report_samples], replies, cfg.chat))
    return "".join(parts), verdict or summary, figures


def ladder_html(ladder: dict) -> str:
    """The quant ladder's one table (convert's last lines): each quant against F16, kept?, and the choice."""
    if "rows" not in ladder:
        return f"<p>Main file: {esc(ladder['reason'])}</p>" if ladder.get("reason") else ""
    from ftg.quant_ladder import kept_label

    def share(value):
        return "-" if value is None else f"{value:.0%}"

    rows = []
    for row in [ladder["baseline"], *ladder["rows"]]:
        style = row["style"]
        kept = kept_label(row, ladder["baseline"], ladder["rule"])
        rows.append([row["type"], f"{row['size_bytes'] / 1e6:,.0f} MB", f"{row['assistant']['top1_agreement']:.1%}",
                     f"{row['assistant']['mean_kl']:.4f}", f"{style['distance']:.2f}", share(style["pass_as_yours"]),
                     share(style["marker_share"]), f"{style['words_mean']:g}",
                     "yes" if row.get("imatrix") else "-", kept])
    reason = ladder["reason"][0].upper() + ladder["reason"][1:]
    return (f"<p><b>Main file (finetuned_gemma.gguf): {esc(reason)}.</b> Measured on your conversations: reply "
            "tokens against the merged model, and the style of sampled replies (distance to yours: 0 = the same).</p>"
            + table(["quant", "size", "reply top-1", "reply KL", "style distance", "pass as yours", "marker",
                     "words", "imatrix", "kept?"], rows, {1, 2, 3, 4, 5, 6, 7}))


def gguf_section(cfg) -> str:
    report = read_json(cfg.paths.output_dir / GGUF_REPORT, "convert_to_gguf")
    reference = report.get("reference", {})
    status = report.get("status", "?")
    parts = [f'<p>Status: <span class="{"good" if status == "passed" else "bad"}">{esc(status)}</span>; compared '
             f"with the merged model on {esc(reference.get('positions', '?'))} positions of "
             f"{esc(reference.get('conversations', '?'))} conversations from {esc(reference.get('source', '?'))}; "
             f"required top-1 agreement for the unquantized file: {esc(report.get('min_top1_agreement', '?'))}.</p>"]
    parts.append(ladder_html(report.get("ladder", {})))
    rows = []
    for row in report.get("files", []):
        logits = row.get("logits", {})
        top1 = logits.get("top1_agreement")
        kl = logits.get("mean_kl")
        rows.append([
            Path(row.get("file", "?")).name, row.get("type", "?"), f"{row.get('size_bytes', 0) / 1e6:,.0f} MB",
            "yes" if row.get("load") else "NO",
            "same" if row.get("tokenizer", {}).get("ok") else ("DIFFERENT" if "tokenizer" in row else "-"),
            "-" if top1 is None else f"{top1:.1%}", "-" if kl is None else f"{kl:.5f}",
            "ok" if row.get("reply", {}).get("ok") else ("BAD" if "reply" in row else "-"),
            "; ".join(row.get("problems", [])) or ("" if row.get("load") else row.get("error", "")),
        ])
    parts.append(table(["file", "type", "size", "loads", "tokenizer", "top-1 agreement", "mean KL", "reply",
                        "problems"], rows, {2, 5, 6}))
    replies = [(Path(row.get("file", "?")).name, row["reply"]["text"]) for row in report.get("files", [])
               if row.get("reply", {}).get("text") is not None]
    if replies:
        parts.append("<p>The reply check's reply of each file:</p>"
                     + table(["file", "reply"], [[name, text] for name, text in replies]))
    return "".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------


def run(cfg, run_name: str = "") -> Path:
    """Build output/report.html from whatever the earlier stages left; returns its path."""
    started = time.time()
    summary, figures = "", {}
    sections = []

    def add(title: str, build) -> None:
        try:
            body = build()
        except UserError as exc:  # a missing input: say which, and which step makes it, then carry on
            body = missing(str(exc))
        sections.append(f"<h2>{esc(title)}</h2>{body}")

    def style_part() -> str:
        nonlocal summary, figures
        body, summary, figures = style_section(cfg)
        return body

    add("Style: base model against fine-tuned", style_part)
    add("Training", lambda: training_section(cfg, run_name))
    add("Data", lambda: data_section(cfg))
    add("GGUF check", lambda: gguf_section(cfg))

    created = time.strftime("%Y-%m-%d %H:%M")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>FineTune Gemma report</title>'
            f"<style>{STYLE}</style></head><body><h1>FineTune Gemma: style report</h1>"
            f'<p class="small">Made {esc(created)} from {esc(cfg.paths.output_dir)}.</p>'
            + (f"<p><b>{esc(summary)}</b></p>" if summary else "")
            + "".join(sections) + "</body></html>\n")
    target = cfg.paths.output_dir / REPORT_HTML
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, page)
    write_json(target.with_name(REPORT_JSON), {"created": created, "summary": summary, **figures})
    print(f"Report written in {time.time() - started:.0f} s" + (f": {summary}" if summary else ""))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="", help="run name under output/runs (or a run folder); default: the latest")
    add_config_arguments(parser, SECTIONS)
    args = parser.parse_args(argv)

    def body() -> int:
        cfg = config_from_args(args)
        print("Settings:\n" + describe(cfg, ["paths", "chat"]))
        target = run(cfg, args.run)
        print(f"\nDone: {target} (open it in a browser)\nNext: chat (talk to the model; chat --compare shows the "
              "base model's reply beside it).")
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
