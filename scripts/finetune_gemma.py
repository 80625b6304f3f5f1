"""Fine-tune a Gemma base model on your conversations with LoRA (QLoRA on a CUDA GPU), resumable and watchable.

Reads:   data/train_dataset.jsonl and data/eval_dataset.jsonl (written by prepare_dataset), the base model folder
         (config.yaml `model:`, --model, or the one download_model selected last).
Writes:  output/runs/<run-name>/ (the contract is ftg/runs.py)
           checkpoint-<step>/   adapter + optimizer + scheduler + RNG + data position (Trainer's own format, loaded
                                with torch's weights_only=True); complete.json is written last, so a checkpoint
                                without it (a crash mid-save) is skipped. The 2 best by eval loss + the latest stay.
           best/                the LoRA adapter with the lowest eval loss + the tokenizer (official chat template)
           run.json             base model, model class, data hash, settings, best step, status (merge_lora reads it)
           tensorboard/         loss, eval loss, lr, grad norm, tokens/s, GPU memory, sample replies
           loss.png             the loss curves, written at the end
         output/runs/latest_run.txt  the name of the newest run (no symlink: Windows).
The finetune_gemma launchers run this stage through scripts/pipeline.py train, which then, unless
--no-auto-export, exports (merge_lora, convert and its checks, report): the merged model and the GGUF files (the
export settings apply: --quant Q8_0, --no-style-report, ...). Run directly, this script only trains.

How it trains is planned by ftg/device_plan.py (method, precision, micro-batch, length, checkpointing) and loaded by
ftg/models.py (LoRA on the language model only); this file is the Trainer and the small callbacks it lacks.

Run:
    finetune_gemma.bat / ./finetune_gemma.sh                  resume the last run if data and settings match
    python scripts/finetune_gemma.py --max-steps 200 --learning-rate 1e-4
    python scripts/finetune_gemma.py --resume new             start a new run even if one could be resumed
    accelerate launch scripts/pipeline.py train             several GPUs (DDP), same script; the main process exports

Ctrl-C finishes the current step, saves a checkpoint and exits; the next run continues from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import signal
import shutil
import sys
import threading
import time
from pathlib import Path

import torch

import ftg  # noqa: F401  before transformers, which imports bitsandbytes: see ftg/__init__.py
from transformers import TrainerCallback  # noqa: E402

from ftg.config import add_config_arguments, config_from_args, describe
from ftg.device_plan import plan_here
from ftg.errors import UserError, run_main
from ftg.files import save_png
from ftg.models import load_model_for_training, resolve_model_dir
from ftg.paths import BEST_DIR, CHECKPOINT_PREFIX, EVAL_FILE, LOSS_PLOT, RUN_FILE, TENSORBOARD_DIR, TRAIN_FILE
from ftg.runs import (RunRecord, checkpoint_dirs, checkpoint_problem, checkpoint_step, choose_run, copy_adapter,
                      mark_latest, read_run, write_marker)
from ftg.training_data import build_dataset, data_hash, prompt_and_reference, render_ids

SECTIONS = ["paths", "model", "train", "export"]  # export: the GGUF settings of the auto-export after training

SAMPLE_REPLY_TOKENS = 48
"""New tokens per sample reply at each evaluation (greedy)."""

PLAN_SETTINGS = ("quantize_4bit", "compute_dtype", "micro_batch", "grad_accum", "max_seq_len", "gradient_checkpointing")
"""The parts of the device plan that change the numbers computed: another value makes another run."""


# ----------------------------------------------------------------------------------------------------------------
# Callbacks: the small pieces Trainer does not have
# ----------------------------------------------------------------------------------------------------------------

class NonFiniteGuard(TrainerCallback):
    """Skip an optimizer step whose gradients hold NaN/inf (a NaN loss gives NaN gradients); stop after N in a row."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_a_row = 0
        self.skipped_steps: list[int] = []
        self.gave_up = False

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        if all(torch.isfinite(g).all() for g in grads):
            self.in_a_row = 0
            return
        for p in model.parameters():
            p.grad = None  # the optimizer skips parameters without a gradient: no update this step
        step = state.global_step + 1
        self.in_a_row += 1
        self.skipped_steps.append(step)
        print(f"\nWARNING: step {step}: non-finite loss or gradient, step skipped ({self.in_a_row} in a row)")
        if self.in_a_row >= self.limit:
            self.gave_up = True
            control.should_training_stop = True


class StopOnCtrlC(TrainerCallback):
    """First Ctrl-C: finish this step, save a checkpoint, stop. Second Ctrl-C: stop at once."""

    def __init__(self):
        self.requested = False

    @staticmethod
    def signals() -> list:
        """SIGINT (Ctrl-C), and on Windows SIGBREAK: Studio's Stop sends Ctrl-Break (CTRL_BREAK_EVENT), because a
        stage it starts in its own process group ignores Ctrl-C, and Python's default for SIGBREAK exits at once."""
        return [getattr(signal, name) for name in ("SIGINT", "SIGBREAK") if hasattr(signal, name)]

    def install(self) -> dict:
        """Catch Ctrl-C (and Ctrl-Break); returns the handlers it replaced ({} where signals cannot be caught)."""
        if threading.current_thread() is not threading.main_thread():  # signal handlers only work there
            return {}
        return {signum: signal.signal(signum, self._handler) for signum in self.signals()}

    @staticmethod
    def uninstall(previous: dict) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _handler(self, signum, frame):
        self.requested = True
        for other in self.signals():  # the second press quits
            signal.signal(other, signal.default_int_handler)
        print("\nCtrl-C: finishing this step and saving a checkpoint (press Ctrl-C again to quit without saving)")

    def on_step_end(self, args, state, control, **kwargs):
        if args.world_size > 1:  # the ranks stop at the same step, or the others wait for the stopped one forever
            flag = torch.tensor(float(self.requested), device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)  # 4 bytes per optimizer step
            self.requested = bool(flag.item())
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


class ProgressMetrics(TrainerCallback):
    """Adds tokens/s and GPU memory to each training log (placed before TensorBoard's callback)."""

    def __init__(self):
        self.last_time = None
        self.last_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_time, self.last_tokens = time.time(), state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return
        now = time.time()
        tokens = state.num_input_tokens_seen
        if self.last_time is not None and now > self.last_time:
            logs["tokens_per_second"] = round((tokens - self.last_tokens) / (now - self.last_time), 1)
        self.last_time, self.last_tokens = now, tokens
        if torch.cuda.is_available():
            logs["gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
            logs["gpu_memory_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 1024**3, 2)


class SampleReplies(TrainerCallback):
    """At each evaluation, write the replies to a few fixed eval prompts to TensorBoard as text (base model at 0)."""

    def __init__(self, writer, tokenizer, samples: list[tuple[list[dict], str]]):
        self.writer, self.tokenizer, self.samples = writer, tokenizer, samples

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not self.samples or not state.is_world_process_zero:
            return
        if state.global_step == 0:
            with model.disable_adapter():
                text = self.replies(model)
            self.writer.add_text("replies/base_model", text, 0)
        else:
            self.writer.add_text("replies/fine_tuned", self.replies(model), state.global_step)
        self.writer.flush()

    @torch.no_grad()
    def replies(self, model) -> str:
        was_training = model.training
        model.eval()
        parts = []
        for number, (prompt, reference) in enumerate(self.samples, start=1):
            ids = render_ids(self.tokenizer, prompt, add_generation_prompt=True)
            inputs = torch.tensor([ids], device=model.device)
            output = model.generate(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=SAMPLE_REPLY_TOKENS,
                do_sample=False,
                use_cache=True,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            reply = self.tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True)
            parts.append(
                f"**{number}. {prompt[-1]['content'][:300]}**\n\n"
                f"model: {reply.strip()}\n\nreference: {reference[:300]}"
            )
        if was_training:
            model.train()
        return "\n\n---\n\n".join(parts)


class CheckpointKeeper(TrainerCallback):
    """After each save: mark the checkpoint complete, keep the 2 best by eval loss + the latest, refresh best/ and
    run.json."""

    def __init__(self, run_dir: Path, record: RunRecord, tokenizer):
        self.run_dir, self.record, self.tokenizer = run_dir, record, tokenizer

    def on_save(self, args, state, control, **kwargs):
        # Under DDP every rank writes its rng_state_<rank>.pth into the checkpoint, and Trainer does not wait for
        # them: the marker, which lists every file's size, is written once all ranks have saved.
        args.distributed_state.wait_for_everyone()
        if not state.is_world_process_zero:
            return
        write_marker(self.run_dir / f"{CHECKPOINT_PREFIX}{state.global_step}")
        eval_losses = {e["step"]: e["eval_loss"] for e in state.log_history if "eval_loss" in e}
        complete = {checkpoint_step(p): p for p in checkpoint_dirs(self.run_dir) if checkpoint_problem(p) == ""}
        ranked = sorted((eval_losses[s], s) for s in complete if s in eval_losses and math.isfinite(eval_losses[s]))
        keep = {state.global_step} | {s for _, s in ranked[:2]}
        for step, path in complete.items():
            if step not in keep:
                shutil.rmtree(path, ignore_errors=True)
        if ranked and ranked[0][1] != self.record.best_step:
            self.record.best_eval_loss, self.record.best_step = ranked[0]
            copy_adapter(complete[self.record.best_step], self.run_dir / BEST_DIR, self.tokenizer)
        self.record.last_step = state.global_step
        self.record.save(self.run_dir)


def build_trainer(model, tokenizer, train_dataset, eval_dataset, plan, train_cfg, output_dir: Path,
                  callbacks: list | None = None, eval_on_start: bool = False):
    """transformers' Trainer with packed (padding-free) batches and our settings; no hand-written loop."""
    from transformers import DataCollatorWithFlattening, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=plan.micro_batch,
        per_device_eval_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.grad_accum,
        learning_rate=train_cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=train_cfg.warmup_ratio,  # a float < 1 is a fraction of the total steps
        weight_decay=0.0,
        max_grad_norm=1.0,
        num_train_epochs=train_cfg.epochs,
        max_steps=train_cfg.max_steps if train_cfg.max_steps > 0 else -1,
        optim="adamw_torch",
        bf16=plan.compute_dtype == "bfloat16",
        use_cpu=plan.device == "cpu",
        activation_checkpointing=plan.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False},
        eval_strategy="steps",
        eval_steps=train_cfg.eval_every,
        eval_on_start=eval_on_start,
        save_strategy="steps",
        save_steps=train_cfg.eval_every,
        logging_steps=max(1, min(10, train_cfg.eval_every // 5)),
        logging_first_step=True,
        prediction_loss_only=True,  # never keep eval logits (tokens x 262k vocabulary)
        include_num_input_tokens_seen=True,
        remove_unused_columns=False,
        report_to="none",  # run() adds TensorBoard itself: its own writer, placed after ProgressMetrics
        seed=train_cfg.seed,
        data_seed=train_cfg.seed,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,  # each checkpoint is a complete adapter folder (+33 MB tokenizer.json, ~1 s)
        # Conversations of a micro-batch are concatenated into one row with position_ids restarting at 0 for each;
        # transformers turns that into a block-diagonal attention mask, so nothing is padded and nothing leaks.
        data_collator=DataCollatorWithFlattening(return_position_ids=True),
        callbacks=callbacks or [],
    )


def write_loss_plot(log_history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and math.isfinite(e["loss"])]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot(*zip(*train), label="train loss", alpha=0.7)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (cross-entropy per assistant token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


# ----------------------------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------------------------


def open_run(cfg, record: RunRecord, state) -> tuple[Path, Path | None, bool]:
    """(run folder, checkpoint to resume from, whether that run is finished). Rank 0 decides and sends its decision
    to the other ranks (accelerate launch), so all train the same run from the same step or all stop."""
    from accelerate.utils import broadcast_object_list

    decision = [None]
    if state.is_main_process:
        run_dir, checkpoint, why = choose_run(cfg.paths.output_dir, record, cfg.train.resume, cfg.train.run_name)
        run_dir.mkdir(parents=True, exist_ok=True)
        mark_latest(run_dir)
        print(why)
        finished = checkpoint is None and (run_dir / RUN_FILE).exists() and read_run(run_dir).status == "finished"
        decision = [(run_dir, checkpoint, finished)]
    run_dir, checkpoint, finished = broadcast_object_list(decision)[0]
    if checkpoint is not None:  # resuming: the best so far still counts
        old = read_run(run_dir)
        record.best_step, record.best_eval_loss, record.started = old.best_step, old.best_eval_loss, old.started
    record.run_name = run_dir.name
    return run_dir, checkpoint, finished


def datasets(tokenizer, files: list[Path], max_seq_len: int, sample_prompts: int):
    """(train dataset, eval dataset, sample prompts with their reference replies) from data/*.jsonl."""
    train_ds, train_stats, _ = build_dataset(tokenizer, files[0], max_seq_len)
    eval_ds, eval_stats, eval_conversations = build_dataset(tokenizer, files[1], max_seq_len)
    print(train_stats.summary("train", max_seq_len))
    print(eval_stats.summary("eval", max_seq_len))
    if len(train_ds) == 0 or len(eval_ds) == 0:
        raise UserError(f"no usable conversations in {files[0] if len(train_ds) == 0 else files[1]}. "
                        "Check the skipped lines above, then run prepare_dataset again.")
    return train_ds, eval_ds, [prompt_and_reference(m) for m in eval_conversations[:sample_prompts]]


def train(cfg) -> tuple[Path, bool]:
    """Train (or resume) a LoRA adapter on data/*.jsonl; (the run folder, whether anything was trained)."""
    from accelerate import PartialState
    from transformers import set_seed
    from transformers.integrations import TensorBoardCallback
    from torch.utils.tensorboard import SummaryWriter

    train_cfg = cfg.train
    model_dir = resolve_model_dir(cfg)
    files = [cfg.paths.data_dir / TRAIN_FILE, cfg.paths.data_dir / EVAL_FILE]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise UserError(f"no training data: {', '.join(missing)} not found. Run prepare_dataset first.")
    if train_cfg.eval_every < 1:
        raise UserError(f"train.eval_every must be at least 1, not {train_cfg.eval_every}.")
    plan = plan_here(model_dir, train_cfg)
    print(f"Base model: {model_dir}\nDevice plan:\n{plan.describe()}")
    # The ranks of a multi-process run (accelerate launch); on the CPU only cpu=True makes them one gloo group, as
    # TrainingArguments(use_cpu=True) will: PartialState() there would give each rank "I am the only process".
    state = PartialState(cpu=plan.device == "cpu")
    settings = {**dataclasses.asdict(train_cfg), "plan": {k: getattr(plan, k) for k in PLAN_SETTINGS}}
    record = RunRecord(run_name="", base_model=str(model_dir.resolve()), data_hash=data_hash(files), settings=settings)
    run_dir, checkpoint, finished = open_run(cfg, record, state)
    if finished:
        print(f"Nothing to train. Adapter: {run_dir / BEST_DIR}. Use --resume new to train again.")
        return run_dir, False

    set_seed(train_cfg.seed)  # LoRA init; Trainer seeds the data order itself
    model, tokenizer = load_model_for_training(model_dir, plan, train_cfg)
    model.print_trainable_parameters()
    record.model_class = type(model.get_base_model()).__name__  # the class merge_lora loads again
    if state.is_main_process:
        record.save(run_dir)
    train_ds, eval_ds, samples = datasets(tokenizer, files, plan.max_seq_len, train_cfg.sample_prompts)
    writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR)) if state.is_main_process else None  # rank 0 logs
    guard, ctrl_c = NonFiniteGuard(train_cfg.max_bad_steps), StopOnCtrlC()
    callbacks = [guard, ctrl_c, ProgressMetrics(), *([TensorBoardCallback(tb_writer=writer)] if writer else []),
                 SampleReplies(writer, tokenizer, samples), CheckpointKeeper(run_dir, record, tokenizer)]
    trainer = build_trainer(model, tokenizer, train_ds, eval_ds, plan, train_cfg, run_dir, callbacks,
                            eval_on_start=checkpoint is None)
    print(f"Training: TensorBoard logs in {run_dir / TENSORBOARD_DIR} (watch with check_tensorboard_runs)")
    previous_handlers = ctrl_c.install()
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        ctrl_c.uninstall(previous_handlers)
        if writer:
            writer.close()
    finish(run_dir, record, trainer, guard, ctrl_c, state.is_main_process, train_cfg.learning_rate)
    return run_dir, True


def finish(run_dir: Path, record: RunRecord, trainer, guard, ctrl_c, main_process: bool, learning_rate: float):
    """After trainer.train: the loss plot, then stop clearly (NaN, Ctrl-C) or mark the run finished."""
    if main_process:
        write_loss_plot(trainer.state.log_history, run_dir / LOSS_PLOT)
    if guard.gave_up:
        raise UserError(
            f"training stopped: {guard.in_a_row} steps in a row (up to step {guard.skipped_steps[-1]}) had NaN or "
            f"infinite loss/gradients. Lower --learning-rate (now {learning_rate:g}, try half) and run "
            "finetune_gemma again; it starts a new run because the settings changed."
        )
    if ctrl_c.requested:
        print(f"Saved {CHECKPOINT_PREFIX}{trainer.state.global_step} in {run_dir}. Run finetune_gemma again to "
              "continue.")
        raise KeyboardInterrupt
    record.status, record.last_step = "finished", trainer.state.global_step
    record.finished = time.strftime("%Y-%m-%dT%H:%M:%S")
    if main_process:
        record.save(run_dir)
    if record.best_step is not None:
        print(f"Best eval loss {record.best_eval_loss:.4f} at step {record.best_step}.")
    print(f"Done: {run_dir / BEST_DIR}  (loss curves: {run_dir / LOSS_PLOT})")


def run(cfg) -> Path:
    """Train (or resume) a LoRA adapter on data/*.jsonl; returns the run folder."""
    return train(cfg)[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, SECTIONS)
    args = parser.parse_args(argv)

    def body() -> int:
        cfg = config_from_args(args)
        print("Settings:\n" + describe(cfg, SECTIONS))
        if train(cfg)[1]:
            print("Next: convert_to_gguf (merges the adapter, then writes and checks the GGUF files).")
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
