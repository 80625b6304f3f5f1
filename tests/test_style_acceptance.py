"""Everything that needs a really fine-tuned Gemma 3 270M, on the one run that trains it: a smaller run of
bench/style_acceptance.py, in which the real 270M learns a machine-checkable style on the CPU.

The learned voice ends every reply with "⚓"; the prompts are held out: they appear nowhere in the training files.
The style acceptance is the bench's own (tuned >= 80 % of replies carry the marker, base <= 5 %, held-out
perplexity down >= 30 %); this run is only shorter. The same run's training folder, GGUF files and report are
checked by the other two tests (they were in test_finetune.py and test_convert.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ftg.config import PROJECT_ROOT
from ftg.models import load_tokenizer
from test_merge import load_strictly


@dataclass
class SailorRun:
    """The one fine-tune of the real Gemma 3 270M in the suite (bench/style_acceptance.py, the sailor persona)."""

    workdir: Path
    """Its data/ and output/: runs/style-acceptance/, merged/, the GGUF files, gguf_report.json, report.html."""
    stdout: str
    stderr: str
    returncode: int

    @property
    def output(self) -> Path:
        return self.workdir / "output"

    @property
    def run_dir(self) -> Path:
        return self.output / "runs" / "style-acceptance"


@pytest.fixture(scope="module")
def sailor_run(demo_model_dir, tmp_path_factory) -> SailorRun:
    """The real 270M trained once, through the whole chain (prepare -> train -> merge -> convert and check -> report),
    by the style bench: about 9 minutes on 2 cores, the one real fine-tune in the suite. Every test that needs a
    tuned 270M is in this file and reads this run's files instead of training its own. A module fixture, not a
    session one: with `-n 2` a worker takes whole files, so a reader elsewhere would train it again on the other.

    The dataset is generated (bench/synthetic_exports.py): the learned voice ends every reply with "⚓", and the 12
    prompts are held out. 30 steps, evaluated at steps 0, 15 and 30. The bench's pass-as-yours classifier is left out
    (--train-replies 0: the marker is the acceptance here; CI: 1086 s with it, 917 s without), and one reply per
    prompt shows the marker share (the bench's 3 are for the style distance's floor). No report.html: its style part
    repeats the bench's sampling, and tests/test_report.py makes the 270M's page itself.
    """
    sys.path.insert(0, str(PROJECT_ROOT / "bench"))
    from synthetic_exports import ME_NAME, SIGNATURE, write_styled_dataset

    root = tmp_path_factory.mktemp("sailor") / "чаты моряка"
    held_out = write_styled_dataset(root / "dataset", 200, seed=7)
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(held_out[:12]) + "\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "style_acceptance.py"), "--dataset", str(root / "dataset"),
         "--marker", SIGNATURE, "--prompts", str(prompts), "--me", ME_NAME, "--model", str(demo_model_dir),
         "--workdir", str(root / "work"), "--steps", "30", "--eval-every", "15",
         "--train-replies", "0", "--replies-per-prompt", "1", "--no-page-report"],
        capture_output=True, text=True, encoding="utf-8",
    )
    return SailorRun(root / "work", result.stdout, result.stderr, result.returncode)


@pytest.mark.slow
def test_style_is_learned_and_measured(sailor_run):
    last = sailor_run.stdout.strip().splitlines()[-1] if sailor_run.stdout.strip() else ""
    match = re.fullmatch(r"tuned_marker=(\d+)% base_marker=(\d+)% ppl_base=([\d.]+) ppl_tuned=([\d.]+)", last)
    assert match, sailor_run.stdout[-3000:] + sailor_run.stderr[-3000:]
    tuned, base, ppl_base, ppl_tuned = int(match[1]), int(match[2]), float(match[3]), float(match[4])
    assert tuned >= 80 and base <= 5 and ppl_tuned <= 0.7 * ppl_base, last
    assert sailor_run.returncode == 0, sailor_run.stderr[-3000:]
    assert (sailor_run.output / "finetuned_gemma.gguf").exists()


@pytest.mark.slow
def test_demo_model_short_run_lowers_eval_loss_and_writes_everything(sailor_run, demo_model_dir):
    """The shared fine-tune of the real 270M (sailor_run: 30 steps, evaluated at 0, 15 and 30) left a
    finished run: falling eval loss, best/, the loss plot, TensorBoard scalars and the sample replies."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert sailor_run.returncode == 0, sailor_run.stderr[-3000:]
    run_dir = sailor_run.run_dir
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "finished" and record["model_class"] == "Gemma3ForCausalLM"
    assert record["base_model"] == str(demo_model_dir.resolve())
    history = json.loads((run_dir / "checkpoint-30" / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    evals = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
    assert [step for step, _ in evals] == [0, 15, 30], evals
    assert evals[-1][1] < evals[0][1] - 0.5, evals
    assert record["best_step"] == min(evals, key=lambda e: e[1])[0]
    assert record["best_eval_loss"] == pytest.approx(min(loss for _, loss in evals))
    best = run_dir / "best"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (best / name).exists(), name
    saved_template = load_tokenizer(best).chat_template  # the official template, no training markers
    assert saved_template.strip() == load_tokenizer(demo_model_dir).chat_template.strip()
    assert "{% generation %}" not in saved_template
    assert (run_dir / "loss.png").stat().st_size > 10_000

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/loss", "eval/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_second"):
        assert tag in scalars, (tag, scalars)
    texts = {tag: events.Tensors(tag) for tag in events.Tags()["tensors"] if tag.startswith("replies/")}
    assert [e.step for e in texts["replies/base_model/text_summary"]] == [0]
    assert [e.step for e in texts["replies/fine_tuned/text_summary"]] == [15, 30]
    reply = texts["replies/fine_tuned/text_summary"][-1].tensor_proto.string_val[0].decode("utf-8")
    assert "reference:" in reply and "model:" in reply


@pytest.mark.slow
def test_gemma3_270m_end_to_end(sailor_run):
    """The real 270M as the shared fine-tune left it (sailor_run: trained, merged, converted to F16 and
    Q4_K_M by the chain): all checks pass, the figures are in the report, the merged model reloads strictly."""
    assert sailor_run.returncode == 0, sailor_run.stderr[-3000:]
    out = sailor_run.output
    report = json.loads((out / "gguf_report.json").read_text(encoding="utf-8"))
    assert report["status"] == "passed" and report["run_name"] == "style-acceptance"
    f16, q4 = report["files"][:2]
    assert (f16["type"], q4["type"]) == ("F16", "Q4_K_M")  # the ladder's first rung, checked like every file
    assert f16["logits"]["top1_agreement_beyond_near_ties"] >= 0.99 and f16["logits"]["mean_kl"] < 0.01
    for row in (f16, q4):
        assert row["load"] and row["tokenizer"]["ok"] and row["reply"]["ok"] and row["decode"]["ok"]
        # The sailor learned short replies that end the turn: both files must stop at <end_of_turn>.
        assert row["reply"]["hf_stopped_at_end_of_turn"] and row["reply"]["stopped_at_end_of_turn"]
        assert row["reply"]["text"].strip()
    assert f16["reply"]["same_tokens_as_hf"] and f16["reply"]["text"] == report["reference"]["hf_reply"]
    assert q4["size_bytes"] < 0.6 * f16["size_bytes"]
    print(f"\n270M figures: F16 top-1 {f16['logits']['top1_agreement']:.4f} (beyond near ties "
          f"{f16['logits']['top1_agreement_beyond_near_ties']:.4f}) KL {f16['logits']['mean_kl']:.2e} "
          f"{f16['size_bytes']} B; Q4_K_M top-1 {q4['logits']['top1_agreement']:.4f} KL {q4['logits']['mean_kl']:.4f} "
          f"{q4['size_bytes']} B; timings {report['timings']}")
    # The main file is the ladder's choice, and it carries the style within the rule's tolerance of F16.
    ladder = report["ladder"]
    chosen = next((r for r in ladder["rows"] if r["type"] == ladder["choice"]), ladder["baseline"])
    base_style, style = ladder["baseline"]["style"], chosen["style"]
    assert style["distance"] <= base_style["distance"] + ladder["rule"]["style_tolerance"], ladder["reason"]
    assert ladder["probe"]["marker"] == "⚓"  # found in the sailor's replies, no setting needed
    assert style["marker_share"] >= base_style["marker_share"] - ladder["rule"]["marker_tolerance"]
    print(f"ladder: {ladder['reason']}; " + ", ".join(
        f"{r['type']} top-1 {r['assistant']['top1_agreement']:.3f} style {r['style']['distance']:.2f} marker "
        f"{r['style']['marker_share']:.0%}" for r in [ladder["baseline"], *ladder["rows"]]))
    load_strictly(out / "merged")
