"""A smaller run of bench/style_acceptance.py: the real Gemma 3 270M learns a machine-checkable style on the CPU.

The dataset is generated (bench/synthetic_exports.py): the learned voice ends every reply with "⚓". The prompts
are held out: they appear nowhere in the training files. The acceptance is the bench's own (tuned >= 80 % of
replies carry the marker, base <= 5 %, held-out perplexity down >= 30 %); this run is only shorter.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ftg.config import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "bench"))
from synthetic_exports import ME_NAME, SIGNATURE, write_styled_dataset  # noqa: E402


@pytest.mark.slow
def test_style_is_learned_and_measured(demo_model_dir, tmp_path):
    dataset = tmp_path / "чаты"
    held_out = write_styled_dataset(dataset, 200, seed=7)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(held_out[:12]) + "\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "style_acceptance.py"), "--dataset", str(dataset),
         "--marker", SIGNATURE, "--prompts", str(prompts), "--me", ME_NAME, "--model", str(demo_model_dir),
         "--workdir", str(tmp_path / "work"), "--steps", "30",
         # The marker is the acceptance here, so the base model does not answer 120 training prompts for the
         # pass-as-yours classifier (the report stage still trains one on 16; CI: 1086 s with them, 917 s without),
         # and one reply per prompt shows the marker share: the bench's 3 are for the style distance's floor.
         "--train-replies", "0", "--replies-per-prompt", "1"],
        capture_output=True, text=True, encoding="utf-8",
    )
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    match = re.fullmatch(r"tuned_marker=(\d+)% base_marker=(\d+)% ppl_base=([\d.]+) ppl_tuned=([\d.]+)", last)
    assert match, result.stdout[-3000:] + result.stderr[-3000:]
    tuned, base, ppl_base, ppl_tuned = int(match[1]), int(match[2]), float(match[3]), float(match[4])
    assert tuned >= 80 and base <= 5 and ppl_tuned <= 0.7 * ppl_base, last
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "work" / "output" / "finetuned_gemma.gguf").exists()
