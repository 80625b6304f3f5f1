"""finetune_gemma: masking, packing, the device plan, Gemma-3n LoRA targets, checkpoints and resume, the non-finite
guard, Ctrl-C, the 270M end-to-end run, and check_tensorboard_runs. Everything runs the real code on real (tiny or
270M) models with the real Gemma tokenizer."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

import check_tensorboard_runs
import finetune_gemma
from conftest import requires_gpu
from ftg import runs as ftg_runs
from ftg.device_plan import LORA_TARGET_REGEX, detect_device, plan_device
from ftg.models import load_model_for_training
from ftg.config import PROJECT_ROOT, load_config
from ftg.errors import UserError
from ftg.models import load_tokenizer
from ftg.training_data import IGNORE_INDEX, build_dataset, tokenize_conversation

SCRIPT = PROJECT_ROOT / "scripts" / "finetune_gemma.py"
TOPICS = ["кошки", "погода", "Python", "чай", "горы", "музыка", "книги", "море", "кофе", "шахматы", "jazz", "trains"]


def conversation(index: int) -> dict:
    """A small chat with a consistent reply style, so a few steps of training visibly lower the eval loss."""
    topic = TOPICS[index % len(TOPICS)]
    messages = [
        {"role": "user", "content": f"Расскажи про {topic}, пожалуйста"},
        {"role": "assistant", "content": f"Ох, {topic} — это моё! Коротко: обожаю {topic}. А ты?"},
    ]
    if index % 3 == 0:
        messages += [
            {"role": "user", "content": "А почему?"},
            {"role": "assistant", "content": f"Потому что {topic} делает день лучше. Simple as that!"},
        ]
    return {"messages": messages, "conversation_id": f"c{index}", "source": "test"}


def write_data(data_dir: Path, n_train: int = 48, n_eval: int = 6) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, indices in (("train_dataset.jsonl", range(n_train)), ("eval_dataset.jsonl", range(500, 500 + n_eval))):
        lines = [json.dumps(conversation(i), ensure_ascii=False) for i in indices]
        (data_dir / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def train_args(model_dir: Path, root: Path, *extra: str) -> list[str]:
    return [
        "--model", str(model_dir), "--data-dir", str(root / "data"), "--output-dir", str(root / "output"),
        "--micro-batch", "2", "--grad-accum", "2", "--max-seq-len", "128", "--sample-prompts", "1",
        "--no-auto-export", *extra,
    ]  # fmt: skip


def losses_by_step(checkpoint: Path) -> dict[int, float]:
    history = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


# ------------------------------------------------------------------------------------------------ data and masking


def test_exactly_one_bos_and_only_assistant_turns_with_end_of_turn_are_labelled(tiny_gemma3_dir, tokenizer_of):
    tokenizer = tokenizer_of(tiny_gemma3_dir)
    messages = [
        {"role": "system", "content": "Отвечай коротко."},
        {"role": "user", "content": "Привет! Как дела?"},
        {"role": "assistant", "content": "  Хорошо, спасибо 😊\n"},
        {"role": "user", "content": "А у меня <start_of_turn> в тексте"},
        {"role": "assistant", "content": "Bye"},
    ]
    sample = tokenize_conversation(tokenizer, messages, max_seq_len=512)
    ids, labels = sample["input_ids"], sample["labels"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    # Labelled tokens form exactly two runs: each reply (as the template trims it) plus its <end_of_turn>.
    runs, current = [], []
    for token, label in zip(ids, labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    assert [tokenizer.decode(run) for run in runs] == ["Хорошо, спасибо 😊<end_of_turn>", "Bye<end_of_turn>"]
    # The sequence ends where generation stops, at the last <end_of_turn> (the newline after a turn is never
    # generated); the newline after the first reply and the whole user/system text carry no loss.
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert ids[-1] == end_of_turn and labels[-1] == end_of_turn
    first_end = ids.index(end_of_turn, ids.index(tokenizer.convert_tokens_to_ids("<start_of_turn>"), 3))
    assert labels[first_end + 1] == IGNORE_INDEX
    # Truncation keeps the start and reports it.
    short = tokenize_conversation(tokenizer, messages, max_seq_len=30)
    assert short["truncated"] and len(short["input_ids"]) == 30


def test_malformed_lines_are_reported_with_their_line_and_skipped(tiny_gemma3_dir, tmp_path, tokenizer_of):
    tokenizer = tokenizer_of(tiny_gemma3_dir)
    good = json.dumps(conversation(1), ensure_ascii=False)
    lines = [
        good,
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                 {"role": "assistant", "content": "c"}]}),
        good,
    ]  # fmt: skip
    path = tmp_path / "train_dataset.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dataset, stats, _ = build_dataset(tokenizer, path, max_seq_len=128)
    assert len(dataset) == 2 and stats.conversations == 6 and stats.used == 2
    report = "\n".join(stats.skipped)
    assert "line 2: not valid JSON" in report
    assert "line 3: no assistant reply" in report
    assert "line 4: a message has no valid role" in report
    assert "chat template refused it" in report  # two user turns in a row


@pytest.mark.parametrize("fixture", ["tiny_gemma3_dir", "tiny_gemma3n_dir"])
def test_packed_batch_gives_the_same_logits_as_separate_conversations(fixture, request):
    """Packing concatenates conversations; the attention must not leak across them."""
    from transformers import DataCollatorWithFlattening

    from ftg.models import load_causal_lm, text_model_class
    from transformers import AutoConfig

    model_dir = request.getfixturevalue(fixture)
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, torch.float32, model_class=text_model_class(AutoConfig.from_pretrained(model_dir)))
    model.config.use_cache = False
    model.eval()
    samples = [tokenize_conversation(tokenizer, conversation(i)["messages"], 512) for i in (0, 1, 2)]
    batch = DataCollatorWithFlattening(return_position_ids=True)(
        [{"input_ids": s["input_ids"], "labels": s["labels"]} for s in samples]
    )
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = 0
        for sample in samples:
            alone = model(input_ids=torch.tensor([sample["input_ids"]])).logits[0]
            part = packed[start : start + len(sample["input_ids"])]
            assert torch.allclose(part, alone, atol=1e-4), (part - alone).abs().max()
            start += len(sample["input_ids"])


# ------------------------------------------------------------------------------------------------ device plan


def test_device_plan_follows_the_card_and_the_user():
    from transformers import Gemma3nTextConfig, Gemma3TextConfig

    e4b = Gemma3nTextConfig()  # the real E4B shapes (transformers' _VARIANTS)
    cfg = load_config(overrides={})
    gib = 1024**3
    plan = plan_device(e4b, 24 * gib, cfg.train, "cuda", "RTX 4090", has_bf16=True)
    assert plan.quantize_4bit and plan.compute_dtype == "bfloat16"
    assert plan.predicted_peak_bytes <= 0.85 * 24 * gib
    assert plan.micro_batch * plan.grad_accum >= 8
    small = plan_device(e4b, 8 * gib, cfg.train, "cuda", "small card", has_bf16=True)
    assert small.predicted_peak_bytes < plan.predicted_peak_bytes
    assert (small.max_seq_len, small.micro_batch, not small.gradient_checkpointing) < (
        plan.max_seq_len, plan.micro_batch, not plan.gradient_checkpointing
    )
    old_card = plan_device(e4b, 24 * gib, cfg.train, "cuda", "T4", has_bf16=False)
    assert old_card.compute_dtype == "float32" and any("float32" in n for n in old_card.notes)

    m270 = Gemma3TextConfig(hidden_size=640, intermediate_size=2048, num_hidden_layers=18, vocab_size=262144,
                            num_attention_heads=4, num_key_value_heads=1, head_dim=256)  # fmt: skip
    cpu = plan_device(m270, 16 * gib, cfg.train)
    assert not cpu.quantize_4bit and cpu.compute_dtype == "float32" and cpu.device == "cpu"
    cfg.train.micro_batch, cfg.train.max_seq_len, cfg.train.gradient_checkpointing = "3", "300", "on"
    forced = plan_device(m270, 16 * gib, cfg.train)
    assert (forced.micro_batch, forced.max_seq_len, forced.gradient_checkpointing) == (3, 300, True)
    assert forced.grad_accum == 5  # round(16 / 3)
    tiny_ram = plan_device(m270, 1 * gib, cfg.train)
    assert any("may run out of memory" in n for n in tiny_ram.notes)


def test_device_plan_uses_the_memory_levers_where_the_card_needs_them():
    """E4B at 2048 tokens on a 12 GiB card (issue 7's goal) fits only with the chunked loss and the per-layer table
    in RAM; a big card keeps the table on the GPU; the CPU never moves it; each lever can be switched off."""
    from transformers import Gemma3nTextConfig, Gemma3TextConfig

    e4b = Gemma3nTextConfig()
    gib = 1024**3

    def plan(memory_gib, device="cuda", model=e4b, **train):
        cfg = load_config(overrides={"train": {"max_seq_len": "2048", **train}})
        return plan_device(model, memory_gib * gib, cfg.train, device, "card", has_bf16=True)

    small = plan(12)
    assert small.loss_chunk_tokens == 1024 and small.per_layer_embeddings_on_cpu
    assert small.predicted_peak_bytes <= 0.85 * 12 * gib
    assert "per-layer embedding table kept in RAM" in small.describe()
    # Without the levers the same card is predicted not to fit 2048 tokens even at micro-batch 1 with checkpointing.
    plain = plan(12, loss_chunk_tokens=0, per_layer_embeddings_on_cpu="off")
    assert any("may run out of memory" in note for note in plain.notes)
    assert plain.predicted_peak_bytes > small.predicted_peak_bytes + 4 * gib
    big = plan(80)
    assert not big.per_layer_embeddings_on_cpu and not big.gradient_checkpointing
    assert plan(80, per_layer_embeddings_on_cpu="on").per_layer_embeddings_on_cpu
    assert not plan(12, device="cpu").per_layer_embeddings_on_cpu
    gemma3 = Gemma3TextConfig(vocab_size=262144)  # no per-layer table: nothing to move
    assert not plan(12, model=gemma3, per_layer_embeddings_on_cpu="on").per_layer_embeddings_on_cpu
    with pytest.raises(UserError, match="per_layer_embeddings_on_cpu must be auto, on or off"):
        plan(12, per_layer_embeddings_on_cpu="sometimes")
    with pytest.raises(UserError, match="loss_chunk_tokens must be 0"):
        plan(12, loss_chunk_tokens=-1)


# ------------------------------------------------------------------------------------------------ Gemma-3n


def test_tiny_gemma3n_trains_only_language_model_lora_weights_and_turn_tokens(tiny_gemma3n_dir, tmp_path):
    """Same functions as finetune_gemma.run: plan, load with LoRA, Trainer; only LoRA weights of the LM and the turn
    tokens' embedding rows change."""
    from transformers import AutoConfig, set_seed

    write_data(tmp_path / "data", n_train=16, n_eval=2)
    cfg = load_config(overrides={"train": {"micro_batch": "2", "grad_accum": "1", "max_seq_len": "128",
                                           "max_steps": 3, "eval_every": 3, "warmup_ratio": 0.0}})  # fmt: skip
    plan = plan_device(AutoConfig.from_pretrained(tiny_gemma3n_dir), 8 * 1024**3, cfg.train)
    # Both memory levers on, as a small card's plan has them (on the CPU the table stays put, but its hooks run).
    plan = dataclasses.replace(plan, per_layer_embeddings_on_cpu=True)
    assert plan.loss_chunk_tokens == 1024
    set_seed(0)
    model, tokenizer = load_model_for_training(tiny_gemma3n_dir, plan, cfg.train)
    assert type(model.get_base_model()).__name__ == "Gemma3nForCausalLM"
    assert hasattr(model.get_base_model(), "_forward_without_chunked_loss")  # ftg.chunked_loss is in place
    assert model.get_base_model().model.embed_tokens_per_layer._ftg_on_cpu  # ftg.cpu_embeddings is in place
    train_ds, _, _ = build_dataset(tokenizer, tmp_path / "data" / "train_dataset.jsonl", plan.max_seq_len)
    eval_ds, _, _ = build_dataset(tokenizer, tmp_path / "data" / "eval_dataset.jsonl", plan.max_seq_len)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = finetune_gemma.build_trainer(model, tokenizer, train_ds, eval_ds, plan, cfg.train, tmp_path / "out")
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    lora = {name for name in before if ".lora_" in name}
    # Besides LoRA, only the turn tokens' rows of the (tied) embedding: one [2 x hidden] parameter, the rest frozen.
    turn_rows = {name for name in before if "trainable_tokens_delta" in name}
    assert turn_rows == {"base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta.default"}
    assert before[next(iter(turn_rows))].shape == (2, model.get_base_model().config.hidden_size)
    assert changed and changed <= lora | turn_rows, sorted(changed - lora - turn_rows)[:5]
    assert {n for n in lora if ".lora_B." in n} | turn_rows <= changed  # every adapter learned something
    for name in lora:  # base_model.model.model.layers.N.(self_attn|mlp).X_proj.lora_A.default.weight
        module = name.split("base_model.model.", 1)[1].split(".lora_")[0]
        assert re.fullmatch(LORA_TARGET_REGEX, module), name
    targeted = {n.split(".lora_")[0].rsplit(".", 1)[1] for n in lora}
    assert targeted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


# ------------------------------------------------------------------------------------------------ runs and resume


def test_choose_run_resumes_same_settings_and_says_what_changed(tmp_path):
    runs = tmp_path / "runs"
    record = ftg_runs.RunRecord(run_name="r1", base_model="/m", data_hash="abc",
                                settings={"learning_rate": 2e-4, "lora_r": 16, "resume": "auto"})
    run_dir = runs / "r1"
    (run_dir / "checkpoint-4").mkdir(parents=True)
    (run_dir / "checkpoint-4" / "adapter_model.safetensors").write_bytes(b"x" * 100)
    ftg_runs.write_marker(run_dir / "checkpoint-4")
    (run_dir / "checkpoint-6").mkdir()  # killed mid-save: no marker
    record.save(run_dir)
    (runs / "latest_run.txt").write_text("r1", encoding="utf-8")

    folder, checkpoint, message = ftg_runs.choose_run(tmp_path, record, "auto", "")
    assert folder == run_dir and checkpoint == run_dir / "checkpoint-4" and "Resuming run r1" in message
    assert not (run_dir / "checkpoint-6").exists()  # half-written: skipped and removed

    changed = dataclasses.replace(record, settings={**record.settings, "learning_rate": 1e-4, "resume": "new"})
    folder, checkpoint, message = ftg_runs.choose_run(tmp_path, changed, "auto", "")
    assert folder != run_dir and checkpoint is None
    assert "learning_rate: 0.0002 -> 0.0001" in message and "resume" not in message.split("differs")[1]
    folder, checkpoint, _ = ftg_runs.choose_run(tmp_path, dataclasses.replace(record, data_hash="new"), "auto", "")
    assert checkpoint is None
    folder, checkpoint, message = ftg_runs.choose_run(tmp_path, changed, "force", "")
    assert checkpoint == run_dir / "checkpoint-4" and "force" in message
    folder, checkpoint, _ = ftg_runs.choose_run(tmp_path, record, "new", "")
    assert folder != run_dir and checkpoint is None
    # A finished run with the same data and settings is not trained again.
    dataclasses.replace(record, status="finished").save(run_dir)
    folder, checkpoint, message = ftg_runs.choose_run(tmp_path, record, "auto", "")
    assert folder == run_dir and checkpoint is None and "already finished" in message


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_loss_curve_and_skips_a_truncated_checkpoint(tiny_gemma3_dir, tmp_path):
    """Kill -9 a run after two checkpoints, cut the latest short, run again: it resumes from the first checkpoint
    with a warning, and its step losses equal those of a run that was never interrupted."""
    steps = ["--max-steps", "6", "--eval-every", "2"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    for root in (whole, broken):
        write_data(root / "data", n_train=40, n_eval=2)
    assert finetune_gemma.main(train_args(tiny_gemma3_dir, whole, *steps)) == 0
    reference = losses_by_step(next((whole / "output" / "runs").glob("*/checkpoint-6")))

    runs = broken / "output" / "runs"
    process = subprocess.Popen([sys.executable, str(SCRIPT), *train_args(tiny_gemma3_dir, broken, *steps)],
                               cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not list(runs.glob("*/checkpoint-4/complete.json")):
            assert process.poll() is None, "the run ended before its second checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    run_dir = next(runs.glob("*/checkpoint-4")).parent
    assert not (run_dir / "checkpoint-6").exists()
    adapter = run_dir / "checkpoint-4" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:1000])  # half a file, as after a crash mid-write

    result = subprocess.run([sys.executable, str(SCRIPT), *train_args(tiny_gemma3_dir, broken, *steps)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, encoding="utf-8")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping checkpoint-4: adapter_model.safetensors is 1,000 bytes" in result.stdout
    assert f"Resuming run {run_dir.name} from checkpoint-2" in result.stdout
    resumed = losses_by_step(run_dir / "checkpoint-6")
    for step in range(3, 7):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-4, abs=1e-5), step
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "finished" and (run_dir / "best" / "adapter_model.safetensors").exists()

    # Once finished, running it again is harmless.
    again = subprocess.run([sys.executable, str(SCRIPT), *train_args(tiny_gemma3_dir, broken, *steps)],
                           cwd=PROJECT_ROOT, capture_output=True, text=True, encoding="utf-8")  # fmt: skip
    assert again.returncode == 0 and "already finished" in again.stdout


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits(tiny_gemma3_dir, tmp_path):
    write_data(tmp_path / "data", n_train=40, n_eval=2)
    runs = tmp_path / "output" / "runs"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *train_args(tiny_gemma3_dir, tmp_path, "--max-steps", "200", "--eval-every", "100")],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # see the log lines as they are printed
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        for line in process.stdout:
            if "'loss'" in line and "'epoch'" in line:  # training has started
                break
            assert time.monotonic() < deadline
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 130, output[-3000:]
    assert "saving a checkpoint" in output
    checkpoints = ftg_runs.checkpoint_dirs(next(runs.glob("*/run.json")).parent)
    assert checkpoints and ftg_runs.checkpoint_problem(checkpoints[-1]) == ""
    assert int(checkpoints[-1].name.split("-")[1]) < 100  # saved at the interrupted step, not a scheduled one


def test_ctrl_break_asks_for_the_checkpoint_too(monkeypatch):
    """Studio's Stop on Windows sends CTRL_BREAK_EVENT (its stages run in their own process group, which ignores
    Ctrl-C); Python raises that as SIGBREAK, whose default ends the process at once with no checkpoint. Linux has no
    SIGBREAK, so SIGUSR1 stands in for it here; a recorder catches it if the stage does not."""
    seen = []
    previous_int = signal.getsignal(signal.SIGINT)
    previous_usr1 = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    monkeypatch.setattr(signal, "SIGBREAK", signal.SIGUSR1, raising=False)
    stop = finetune_gemma.StopOnCtrlC()
    replaced = stop.install()
    try:
        signal.raise_signal(signal.SIGUSR1)
        assert stop.requested and not seen
    finally:
        stop.uninstall(replaced)
        signal.signal(signal.SIGUSR1, previous_usr1)
    assert signal.getsignal(signal.SIGINT) is previous_int  # whatever handled Ctrl-C before training does again


def test_non_finite_gradients_are_skipped_then_training_stops_clearly(tiny_gemma3_dir, tmp_path, capsys):
    write_data(tmp_path / "data", n_train=40, n_eval=2)
    # A learning rate of 1e30 turns the LoRA weights into inf after the first update: every later step is NaN.
    args = train_args(tiny_gemma3_dir, tmp_path, "--max-steps", "20", "--eval-every", "100", "--learning-rate",
                      "1e30", "--warmup-ratio", "0", "--max-bad-steps", "2")  # fmt: skip
    assert finetune_gemma.main(args) == 1
    captured = capsys.readouterr()
    assert "non-finite loss or gradient, step skipped (1 in a row)" in captured.out
    assert "2 steps in a row" in captured.err and "Lower --learning-rate" in captured.err


# ------------------------------------------------------------------------------------------------ TensorBoard


def test_check_tensorboard_runs_serves_the_runs(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    cfg = load_config(overrides={"paths": {"output_dir": str(tmp_path / "output")}})
    with pytest.raises(UserError, match="no training runs"):
        check_tensorboard_runs.run(cfg, browser=False, block=False)
    writer = SummaryWriter(str(tmp_path / "output" / "runs" / "запуск 1" / "tensorboard"))
    writer.add_scalar("train/loss", 1.5, 1)
    writer.close()
    url = check_tensorboard_runs.run(cfg, browser=False, block=False)
    with urllib.request.urlopen(url + "data/runs", timeout=60) as response:
        assert "запуск 1" in json.loads(response.read().decode("utf-8"))[0]


# ------------------------------------------------------------------------------------------------ GPU


@requires_gpu
@pytest.mark.gpu
def test_qlora_on_gemma3n_at_e2b_shapes_trains_without_nan(demo_model_dir, tmp_path):
    """4-bit QLoRA through load_model_for_training on a random Gemma-3n with the real E2B shapes."""
    from transformers import AutoConfig, Gemma3nForCausalLM, Gemma3nTextConfig

    e2b = Gemma3nTextConfig(intermediate_size=8192, num_hidden_layers=30, num_kv_shared_layers=10,
                            activation_sparsity_pattern=[0.95] * 10 + [0.0] * 20)  # fmt: skip
    model_dir = tmp_path / "e2b"
    with torch.device("cuda"):
        Gemma3nForCausalLM(e2b).to(torch.bfloat16).save_pretrained(model_dir)
    load_tokenizer(demo_model_dir).save_pretrained(model_dir)  # the real Gemma tokenizer
    write_data(tmp_path / "data", n_train=64, n_eval=4)
    cfg = load_config(overrides={"train": {"max_steps": 6, "eval_every": 6, "max_seq_len": "1024"}})
    device, name, memory, bf16 = detect_device()
    plan = plan_device(AutoConfig.from_pretrained(model_dir), memory, cfg.train, device, name, bf16)
    assert plan.quantize_4bit and plan.compute_dtype == "bfloat16"
    model, tokenizer = load_model_for_training(model_dir, plan, cfg.train)
    train_ds, _, _ = build_dataset(tokenizer, tmp_path / "data" / "train_dataset.jsonl", plan.max_seq_len)
    eval_ds, _, _ = build_dataset(tokenizer, tmp_path / "data" / "eval_dataset.jsonl", plan.max_seq_len)
    torch.cuda.reset_peak_memory_stats()
    trainer = finetune_gemma.build_trainer(model, tokenizer, train_ds, eval_ds, plan, cfg.train, tmp_path / "out")
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    print(f"peak allocated {torch.cuda.max_memory_allocated() / 1024**3:.2f} GiB, "
          f"predicted {plan.predicted_peak_bytes / 1024**3:.2f} GiB, {result.metrics}")  # fmt: skip
