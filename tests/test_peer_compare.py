"""bench/peer_compare.py --tiny runs every row end to end on the CPU, each in its own process (issue 17).

The LLaMA-Factory row needs its own venv (<work>/venv-llamafactory); without one it is skipped and the bench says so.
Timings are printed by the bench, never asserted here: the machine may be shared.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/peer_compare")
"""The bench's default work folder: where a LLaMA-Factory venv, if any, was made."""


@pytest.mark.slow
def test_peer_compare_tiny(tmp_path, demo_model_dir):
    work = tmp_path / "work"
    work.mkdir()
    venv = WORK / "venv-llamafactory"
    if (venv / "bin" / "python").exists():
        (work / "venv-llamafactory").symlink_to(venv)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "peer_compare.py"), "--tiny", "--steps", "2", "--work", str(work),
         "--out", str(out), "--predict-for"],
        capture_output=True, text=True, encoding="utf-8", env=env, cwd=tmp_path, timeout=1500,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads((out / "peer_compare.json").read_text(encoding="utf-8"))
    rows = {r["row"]: r for r in report["results"]}
    failed = {name: r["log_tail"][-800:] for name, r in rows.items() if "error" in r}
    assert not failed, failed
    expected = {"ours", "trl_default", "trl_best"} | ({"llamafactory"} if (venv / "bin" / "python").exists() else set())
    assert set(rows) == expected
    if "llamafactory" not in rows:
        assert any("llamafactory: skipped" in line for line in report["skipped"])
        assert "llamafactory: skipped" in completed.stdout

    for name, r in rows.items():
        for key in ("median_step_s", "real_tokens_per_s", "padding_fraction", "last_loss", "peak_rss_bytes"):
            assert math.isfinite(r[key]), (name, key)
        assert r["real_tokens_per_s"] > 0 and r["peak_rss_bytes"] > 0 and r["timed_steps"] == 1, name
        assert r["steps"] == 2 and r["micro_batches"] == 2 * report["job"]["grad_accum"], name
        assert r["real_tokens_per_s"] == r["real_tokens_timed"] / r["timed_seconds"], name
        assert 0 < r["labelled_tokens_per_step"] * r["steps"] <= r["real_tokens"] <= r["fed_tokens"], name
        # every row's trained model scored on the same held-out conversations (8 in the tiny data), our labels
        assert math.isfinite(r["heldout_loss"]) and r["heldout_loss"] > 0, name
    assert len(report["job"]["heldout"]) == 8
    # The same conversations in the same order, counted the same way: every peer saw the same real tokens (the chat
    # formats agree on Gemma's text; the templates differ only in the labels), however much padding it added. Ours
    # stops each example at its last <end_of_turn> (ftg.chat_template: the newline after it is never generated, so
    # never trained): exactly one token fewer per conversation seen.
    tokens = {n: r["real_tokens"] for n, r in rows.items()}
    conversations = 2 * report["job"]["micro_batch"] * report["job"]["grad_accum"]
    assert len({t for n, t in tokens.items() if n != "ours"}) == 1, tokens
    assert tokens["ours"] == tokens["trl_default"] - conversations, tokens
    packed = {"ours", "trl_best"}
    for name, r in rows.items():
        if name in packed:
            assert r["padding_fraction"] == 0 and r["real_tokens"] == r["fed_tokens"], name
        else:
            assert r["padding_fraction"] > 0, name
    # Loss on every token (TRL's default) labels far more than the assistant-only rows.
    assert rows["trl_default"]["labelled_tokens_per_step"] > 1.5 * rows["ours"]["labelled_tokens_per_step"]
    assert not rows["ours"]["gradient_checkpointing"] and rows["trl_default"]["gradient_checkpointing"]
    for peer in expected - {"ours"}:
        ratio = report["ratios"][peer]["tokens_per_s"]
        assert ratio == rows["ours"]["real_tokens_per_s"] / rows[peer]["real_tokens_per_s"]
        assert f"ours vs {peer}" in completed.stdout
    assert "load average" in completed.stdout and "not a performance figure" in completed.stdout
    assert report["predicted_ratios"]["trl_default"]["measured model"] > 0
