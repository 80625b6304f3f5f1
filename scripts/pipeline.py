"""The one chain of stages after prepare_dataset: train -> merge -> convert (with its GGUF checks) -> report -> apps.

Each stage is its own script that reads what the one before wrote (ftg/paths.py names the files); this module only
calls them in order. It is the only one, beside run_demo.py, that runs more than one stage.

The launchers that chain stages call it, so no stage imports another (or this module):

    finetune_gemma      pipeline.py train               train (or resume); then, with train.auto_export on (the
                                                         default), merge -> convert -> report -> app hints
    convert_to_gguf     pipeline.py export              merge -> convert -> report -> app hints
    convert_only        pipeline.py export --skip-merge convert -> report -> app hints
    run_demo            run()                           train -> merge -> convert -> report -> app hints

Run:
    python scripts/pipeline.py train --max-steps 200      what finetune_gemma.bat / .sh runs
    python scripts/pipeline.py export --quant Q8_0        what convert_to_gguf runs (a menu asks the quant type when
                                                          --quant is not given and the console is interactive)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import convert
import finetune_gemma
import merge_lora
import report
from ftg.config import add_config_arguments, config_from_args, describe
from ftg.errors import UserError, run_main
from ftg.paths import BEST_DIR, MODELFILE

SECTIONS = ["paths", "model", "train", "export", "chat"]


def print_app_hints(main_file: Path, modelfile: Path) -> None:
    print(f"""
Use it:
  LM Studio: lms import "{main_file}"   (or copy it to ~/.lmstudio/models/me/finetuned-gemma/)
  KoboldCpp: koboldcpp --model "{main_file}"   (or pick the file in its launcher; it reads the chat template from the file)
  Ollama:    cd "{modelfile.parent}" && ollama create finetuned-gemma -f Modelfile && ollama run finetuned-gemma""")


def export(cfg, run_name: str = "", merge: bool = True) -> Path:
    """Merge the run's best adapter (unless merge=False), convert and check the GGUF files, write the style report
    (export.style_report, after a checked conversion); returns the main GGUF file."""
    if merge:
        merge_lora.run(cfg, run_name)
    main_file = convert.run(cfg)
    if cfg.export.style_report and cfg.export.verify_gguf:
        report.run(cfg, run_name)
    print_app_hints(main_file, cfg.paths.output_dir / MODELFILE)
    return main_file


def export_after_training(cfg, run_dir: Path) -> Path:
    """The auto-export at the end of finetune_gemma. A failed export says that training itself succeeded."""
    print("\nAuto-export: merging the adapter, then converting to GGUF (skip with --no-auto-export)")
    try:
        return export(cfg, run_dir.name)
    except UserError as exc:
        raise UserError(f"training succeeded, and the adapter is saved in {run_dir / BEST_DIR}; the export after it "
                        f"failed: {exc} When that is fixed, run only the export: convert_to_gguf (nothing is trained "
                        "again).") from None


def run(cfg) -> Path:
    """Train (or resume), then export; returns the main GGUF file."""
    run_dir, trained = finetune_gemma.train(cfg)
    if not trained:
        print("Exporting the finished run.")
    return export_after_training(cfg, run_dir)


def train_then_export(cfg) -> None:
    """finetune_gemma's launcher: train (or resume); then the export when train.auto_export is on and this run
    trained (under `accelerate launch`, only the main process exports)."""
    from accelerate import PartialState

    run_dir, trained = finetune_gemma.train(cfg)
    if trained and cfg.train.auto_export and PartialState().is_main_process:
        export_after_training(cfg, run_dir)
    elif trained:
        print("Next: merge_lora (joins the adapter to the base model), then convert_only (writes the GGUF files).")


def export_command(cfg, args) -> None:
    """convert_to_gguf / convert_only: the export, after the quant menu when --quant is not given at a console."""
    convert.check_settings(cfg.export)  # a wrong quant type or precision is said before anything is merged
    if getattr(args, "export.quant") is None and sys.stdin.isatty():
        cfg.export.quant = convert.choose_quant(cfg.export.quant, convert.estimate_parameters(cfg, args.run))
    main_file = export(cfg, args.run, merge=not args.skip_merge)
    print(f"\nDone: {main_file}\nNext: chat (talk to it), or load it in LM Studio / KoboldCpp / Ollama.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="train (or resume), then export when train.auto_export is on")
    export_parser = commands.add_parser("export", help="merge (unless --skip-merge), convert, check, report")
    export_parser.add_argument("--run", default="", help="run name under output/runs (or a run folder); default: "
                               "the latest")
    export_parser.add_argument("--skip-merge", action="store_true",
                               help="only convert the existing output/merged (what convert_only runs)")
    for command in (train_parser, export_parser):
        add_config_arguments(command, SECTIONS)
    args = parser.parse_args(argv)

    def body() -> int:
        cfg = config_from_args(args)
        print("Settings:\n" + describe(cfg, SECTIONS))
        if args.command == "train":
            train_then_export(cfg)
        else:
            export_command(cfg, args)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
