"""A smaller run of bench/style_acceptance.py: the real Gemma 3 270M learns a machine-checkable style on the CPU.

The run itself is conftest's session fixture `sailor_run` (the one real fine-tune of the suite, shared with
test_convert and test_finetune). The learned voice ends every reply with "⚓"; the prompts are held out: they appear
nowhere in the training files. The acceptance is the bench's own (tuned >= 80 % of replies carry the marker,
base <= 5 %, held-out perplexity down >= 30 %); this run is only shorter.
"""

from __future__ import annotations

import re

import pytest


@pytest.mark.slow
def test_style_is_learned_and_measured(sailor_run):
    last = sailor_run.stdout.strip().splitlines()[-1] if sailor_run.stdout.strip() else ""
    match = re.fullmatch(r"tuned_marker=(\d+)% base_marker=(\d+)% ppl_base=([\d.]+) ppl_tuned=([\d.]+)", last)
    assert match, sailor_run.stdout[-3000:] + sailor_run.stderr[-3000:]
    tuned, base, ppl_base, ppl_tuned = int(match[1]), int(match[2]), float(match[3]), float(match[4])
    assert tuned >= 80 and base <= 5 and ppl_tuned <= 0.7 * ppl_base, last
    assert sailor_run.returncode == 0, sailor_run.stderr[-3000:]
    assert (sailor_run.output / "finetuned_gemma.gguf").exists()
