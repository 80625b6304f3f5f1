"""The quant ladder (scripts/ftg/quant_ladder.py, convert.quantize_and_choose): the main GGUF is the smallest quant
that keeps the style, measured; a forced quant is given as asked, with one line saying what it loses."""

from __future__ import annotations

import json

import pytest

import convert
import pipeline
from ftg.gguf_make import tensor_type_counts, tensor_types
from ftg.paths import EVAL_FILE, TRAIN_FILE
from ftg.quant_ladder import (TRAIN_REPLIES, assistant_rows, choose, find_marker, keeps_style, ladder_order,
                              probe_conversations)
from lora_runs import make_run
from test_convert import project_config, write_eval_file

RULE = {"style_tolerance": 0.05, "min_assistant_top1": 0.90, "marker_tolerance": 0.10}


def row(gguf_type, size, top1, distance, marker=None):
    return {"type": gguf_type, "size_bytes": size, "assistant": {"top1_agreement": top1, "mean_kl": 0.0},
            "style": {"distance": distance, "marker_share": marker}}


def test_the_rule_takes_the_smallest_quant_that_keeps_the_style():
    f16 = row("F16", 540e6, 1.0, 0.30, 1.0)
    q4, q8 = row("Q4_K_M", 250e6, 0.95, 0.31, 0.04), row("Q8_0", 292e6, 0.99, 0.30, 1.0)
    assert keeps_style(q4, f16, RULE) == (False, "Q4_K_M loses your style (marker 4% vs 100% at F16)")
    assert choose([q8, q4], f16, RULE) == ("Q8_0", "Q4_K_M loses your style (marker 4% vs 100% at F16); "
                                                   "chose Q8_0, 292 MB")
    far, wrong = row("Q8_0", 292e6, 0.99, 0.36), row("Q8_0", 292e6, 0.89, 0.30)
    assert "style distance 0.36 vs 0.30" in keeps_style(far, f16, RULE)[1]
    assert "reply-token agreement 89% < 90%" in keeps_style(wrong, f16, RULE)[1]
    assert choose([far], f16, RULE)[0] == "F16"
    assert ladder_order(["Q8_0", "Q4_K_M", "Q6_K", "Q5_K_M"]) == ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
    assert find_marker(["Ahoy! fine ⚓", "Ahoy! yes ⚓", "no"]) is None
    assert find_marker(["хорошо, капитан", "да, Капитан", "иду, капитан", "ок капитан", "нет"]) == "капитан"


def write_replies(path, count, tag):
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"{tag} q{i}"},
                                                     {"role": "assistant", "content": f"{tag} a{i}"}]}) + "\n"
                            for i in range(count)), encoding="utf-8")


def test_probe_tops_up_from_training_conversations_the_classifier_does_not_learn_from(tmp_path):
    write_replies(tmp_path / EVAL_FILE, 1, "eval")
    write_replies(tmp_path / TRAIN_FILE, TRAIN_REPLIES + 50, "train")
    probe, train, held = probe_conversations(tmp_path, 4)
    assert held == 1 and [m[-1]["content"] for m in probe] == ["eval a0"] + [f"train a{TRAIN_REPLIES + i}"
                                                                             for i in range(3)]
    assert len(train) == TRAIN_REPLIES and not {m[-1]["content"] for m in probe} & {m[-1]["content"] for m in train}
    write_replies(tmp_path / TRAIN_FILE, 10, "train")  # a short file: the top-up is its last conversations
    probe, train, held = probe_conversations(tmp_path, 4)
    assert [m[-1]["content"] for m in probe[1:]] == ["train a7", "train a8", "train a9"] and len(train) == 10


def test_assistant_rows_are_the_reply_tokens(demo_model_dir, tokenizer_of):
    """The mask, read back: the tokens it marks decode to the replies and their end-of-turn, nothing of the prompts."""
    tokenizer = tokenizer_of(demo_model_dir)
    messages = [{"role": "user", "content": "Привет!"}, {"role": "assistant", "content": "Йо-хо-хо! ⚓"},
                {"role": "user", "content": "Как дела?"}, {"role": "assistant", "content": "Отлично ⚓"}]
    ids, rows = assistant_rows(tokenizer, messages, 128)
    assert tokenizer.decode([ids[r + 1] for r in rows]) == "Йо-хо-хо! ⚓<end_of_turn>Отлично ⚓<end_of_turn>"


@pytest.mark.slow
def test_tiny_ladder_chooses_removes_and_forces(tiny_gemma3_dir, project_copy, capsys):
    """The ladder on a tiny random Gemma 3, measured for real (about 60 s on 2 busy cores): the choice follows the
    rule on the measured rows, the other files are gone, the Modelfile loads the chosen one; a forced Q4_K_M is
    written as asked with its one line."""
    make_run(project_copy / "output", tiny_gemma3_dir, "Gemma3ForCausalLM")
    write_eval_file(project_copy / "data")
    out = project_copy / "output"
    cfg = project_config(project_copy, ladder_conversations=3, ladder_greedy_replies=1, style_report=False)
    cfg.chat.report_reply_tokens = 12
    assert pipeline.export(cfg) == out / "finetuned_gemma.gguf"
    console = capsys.readouterr().out
    ladder = json.loads((out / "gguf_report.json").read_text(encoding="utf-8"))["ladder"]
    rows, baseline = ladder["rows"], ladder["baseline"]
    assert [r["type"] for r in rows] == ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"][: len(rows)]
    kept = [r["type"] for r in rows if keeps_style(r, baseline, ladder["rule"])[0]]
    if kept:  # the ladder stops at the first quant that keeps the style
        assert kept == [rows[-1]["type"]] == [ladder["choice"]]
    else:
        assert ladder["choice"] == "F16" and len(rows) == 4
    assert ladder["probe"]["assistant_positions"] > 0 and all(len(r["replies"]) == ladder["probe"]["conversations"] == 2 for r in rows)
    assert sorted(p.name for p in out.glob("*.gguf")) == ["finetuned_gemma.gguf"]
    assert "FROM ./finetuned_gemma.gguf\n" in (out / "Modelfile").read_text(encoding="utf-8")
    assert f"Main file: {ladder['reason'][0].upper()}" in console and "kept?" in console

    cfg.export.quant, cfg.export.keep_f16 = "Q4_K_M", True
    convert.run(cfg)
    console = capsys.readouterr().out
    ladder = json.loads((out / "gguf_report.json").read_text(encoding="utf-8"))["ladder"]
    (forced,) = ladder["rows"]
    assert ladder["choice"] == "Q4_K_M" and forced["why"].startswith("Q4_K_M ")
    assert forced["why"] in console
    (q4,) = [r for r in json.loads((out / "gguf_report.json").read_text(encoding="utf-8"))["files"]
             if r["type"] == "Q4_K_M"]  # the tiny's 64-wide rows fall back to Q5_0 inside a Q4_K_M file
    assert q4["file"].endswith("finetuned_gemma.gguf") and q4["tensor_types"] == tensor_type_counts(
        tensor_types(out / "finetuned_gemma.gguf"))
    assert sorted(p.name for p in out.glob("*.gguf")) == ["finetuned_gemma-F16.gguf", "finetuned_gemma.gguf"]
