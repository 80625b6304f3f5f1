"""finetune_gemma under `accelerate launch` with 2 processes on the CPU (torch.distributed over gloo): the same
Trainer DDP path as several GPUs, without the GPUs. One run is stopped by Ctrl-C and resumed; its losses
match a 1-process run of the same global batch, and only rank 0 writes the run's files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

import finetune_gemma
from ftg import runs as ftg_runs
from ftg.config import PROJECT_ROOT
from test_finetune import SCRIPT, train_args, write_data

LOSS_TOLERANCE = 1e-3
"""Absolute, on losses near 12.4 (the tiny model is random). Measured 1- vs 2-process: 0 at step 1, then up to
1.5e-4 (dev_log.txt, 2026-12-02): gradients are summed in another float32 order (over ranks by gloo, not within one
micro-batch), and Adam's first update, lr x sign(g), turns that noise into weight changes of the order of lr. Other
data in a step moves the loss by 3e-2 or more."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(model_dir, root, log, *extra: str) -> subprocess.Popen:
    """accelerate launch with 2 processes: --multi_gpu is its torchrun launcher; --cpu would start one process (it
    wants mpirun for more). Without CUDA, finetune_gemma's PartialState(cpu=True) joins them over gloo. Output goes
    to the file `log` (a pipe nobody reads while we wait would fill and stop the ranks)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(SCRIPT), *train_args(model_dir, root, *extra)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # 1 thread per rank: 2 ranks on 2 cores
    with open(log, "w", encoding="utf-8") as out:
        return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def log_by_step(checkpoint) -> dict[int, tuple[float, int]]:
    """step -> (train loss, input tokens seen so far): equal token counts mean the step saw the same conversations."""
    history = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    return {e["step"]: (e["loss"], e["num_input_tokens_seen"]) for e in history if "loss" in e}


@pytest.mark.slow  # 2 launches of 2 ranks: ~140 s of CPU, most of it importing torch and transformers
def test_two_processes_ctrl_c_resume_match_one_process_and_only_rank_0_writes(tiny_gemma3_dir, tmp_path):
    # Global batch 4 conversations per optimizer step both ways: 1 process x micro-batch 2 x grad-accum 2, and
    # 2 processes x micro-batch 1 x grad-accum 2. Trainer's sampler shuffles once with data_seed; accelerate hands
    # rank r the micro-batches r, r+2, ... of that order, so each step holds the same 4 conversations.
    steps = ["--max-steps", "4", "--eval-every", "2", "--grad-accum", "2", "--sample-prompts", "0"]  # no replies: time
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        write_data(root / "data", n_train=40, n_eval=2)
    assert finetune_gemma.main(train_args(tiny_gemma3_dir, one, *steps, "--micro-batch", "2")) == 0
    reference = log_by_step(next((one / "output" / "runs").glob("*/checkpoint-4")))

    runs = two / "output" / "runs"
    log = tmp_path / "launch.log"
    process = launch(tiny_gemma3_dir, two, log, *steps, "--micro-batch", "1")
    try:
        deadline = time.monotonic() + 300
        while not list(runs.glob("*/checkpoint-2/complete.json")):
            assert process.poll() is None, log.read_text(encoding="utf-8")[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # Ctrl-C for rank 1 alone: rank 0 must stop at the same step too, or it waits for rank 1 forever. (Ctrl-C in
        # a terminal reaches only the launcher, whose ranks run in sessions of their own; it passes it to all.)
        rank_1 = [p for p in psutil.Process(process.pid).children() if p.environ().get("RANK") == "1"]
        assert len(rank_1) == 1
        rank_1[0].send_signal(signal.SIGINT)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            for leftover in [*psutil.Process(process.pid).children(recursive=True), process]:
                leftover.kill()
    output = log.read_text(encoding="utf-8")
    assert output.count("saving a checkpoint") == 1 and output.count("Run finetune_gemma again to continue") == 2, (
        output[-3000:])  # one rank was signalled, both saved and stopped
    run_dir = runs / (runs / "latest_run.txt").read_text(encoding="utf-8").strip()
    assert [p for p in runs.iterdir() if p.is_dir()] == [run_dir]  # rank 1 chose no folder of its own
    stopped_at = max(ftg_runs.checkpoint_step(c) for c in ftg_runs.checkpoint_dirs(run_dir))
    assert stopped_at == 3 and ftg_runs.checkpoint_problem(run_dir / "checkpoint-3") == ""  # the interrupted step
    marker = json.loads((run_dir / "checkpoint-3" / "complete.json").read_text(encoding="utf-8"))["files"]
    assert {"rng_state_0.pth", "rng_state_1.pth", "optimizer.pt"} <= set(marker)  # written after every rank saved

    resumed = launch(tiny_gemma3_dir, two, log, *steps, "--micro-batch", "1")
    resumed.wait(timeout=300)
    output = log.read_text(encoding="utf-8")
    assert resumed.returncode == 0, output[-3000:]
    assert [p for p in runs.iterdir() if p.is_dir()] == [run_dir]
    # Rank 0 alone decides and says so; both ranks resume from the checkpoint of the interrupted step.
    assert output.count(f"Resuming run {run_dir.name} from checkpoint-3") == 1, output[-3000:]

    two_losses = log_by_step(run_dir / "checkpoint-4")  # steps 1-3 from the stopped run, 4 after the resume
    assert sorted(two_losses) == sorted(reference) == [1, 2, 3, 4]
    for step, (loss, tokens) in reference.items():
        assert two_losses[step][1] == tokens, step
        assert abs(two_losses[step][0] - loss) < LOSS_TOLERANCE, (step, two_losses[step][0], loss)
    print("losses (1 process, 2 processes):", {s: (reference[s][0], two_losses[s][0]) for s in reference})

    # Only rank 0 writes the run's files: one run folder (above), one TensorBoard event file per launch, the record.
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "finished" and record["last_step"] == 4 and record["best_step"] is not None
    assert (run_dir / "best" / "adapter_model.safetensors").exists() and (run_dir / "loss.png").exists()
