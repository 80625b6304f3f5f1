"""Turn the merged model into checked GGUF files for LM Studio, KoboldCpp and Ollama.

Reads:   output/merged/ (made by merge_lora; merged first unless --skip-merge), data/eval_dataset.jsonl for the
         logit check (a built-in prompt set when it is missing), data/train_dataset.jsonl for the K-quants'
         importance matrix (export.imatrix, ftg/imatrix.py).
Writes:  output/finetuned_gemma-F16.gguf   (or -BF16) the unquantized GGUF, checked first, quantized from; removed
                                           at the end unless export.keep_f16
         output/finetuned_gemma.gguf       the main file: with export.quant auto (the default) the smallest quant of
                                           export.quant_ladder that keeps your style (ftg/quant_ladder.py: measured
                                           against F16 and the merged model; F16 itself when none does); else the
                                           forced export.quant, with one line saying what it loses
         output/finetuned_gemma-<TYPE>.gguf  one per export.extra_quants (the ladder's others: export.keep_ladder)
         output/gguf_report.json           the figures of every check (see ftg/gguf_check.py)
         output/Modelfile                  for `ollama create`

Every GGUF is checked against the merged model: it loads, tokenizes like HF, predicts the same next token (the
unquantized file must agree on >= 99% of positions, or the export fails), and replies through its embedded chat
template without template tags, stopping at the template's end-of-turn token (<end_of_turn>; <turn|> for Gemma 4).

This script is the convert stage alone. The launchers run it through scripts/pipeline.py, which chains the merge
before it and the style report (report.py) after it.

Run:
    convert_to_gguf.bat / ./convert_to_gguf.sh       merge, convert, report (scripts/pipeline.py export)
    convert_only.bat / ./convert_only.sh             convert output/merged, report (pipeline.py export --skip-merge)
    python scripts/convert.py --quant Q5_K_M --extra-quants Q8_0     this stage only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ftg.chat_template import ChatFormat
from ftg.config import add_config_arguments, config_from_args, describe
from ftg.errors import UserError, run_main
from ftg.files import check_free_space, write_json, write_text_atomic
from ftg.gguf_make import (PRECISIONS, QUANTS, convert_hf_to_gguf, count_parameters, gguf_bytes, normalize_quants,
                           quantize, require_converter, tensor_type_counts, tensor_types, tensor_types_for)
from ftg.llama_runtime import RUNTIME_MISSING, runtime_available
from ftg.models import load_tokenizer
from ftg.paths import EVAL_FILE, GGUF_REPORT, MERGE_RECORD, MODELFILE, TRAIN_FILE, gguf_file, merged_dir
from ftg.runs import find_run, read_run

SECTIONS = ["paths", "model", "export", "chat"]
AUTO = "auto"
"""export.quant = auto: the main file is the smallest quant of export.quant_ladder that keeps your style."""
PER_LAYER_TABLE = "per_layer_token_embd.weight"
"""Gemma-3n / 4's per-layer embedding table in the GGUF; gguf_report.json says its type for every file."""  # model, chat: for the style report after the export


def choose_quant(default: str, n_params: int, ask=input) -> str:
    """The interactive menu: each type with its estimated size and trade-off; Enter keeps `default`."""
    names = [*QUANTS, AUTO]
    print("\nWhich GGUF quantization? Smaller files run faster and need less memory, but answer a little worse.")
    for number, name in enumerate(names, 1):
        mark = "  <- default" if name == default else ""
        if name == AUTO:
            print(f"  {number}. {AUTO:<7} the smallest that keeps your style, measured on your chats{mark}")
            continue
        bits, note = QUANTS[name]
        size = f"~{n_params * bits / 8 / 1e9:5.2f} GB" if n_params else f"{bits:.1f} bits/weight"
        print(f"  {number}. {name:<7} {size}  {note}{mark}")
    while True:
        try:
            answer = ask(f"Number or name [Enter = {default}]: ").strip()
        except EOFError:
            return default
        if not answer:
            return default
        if answer.isdigit() and 1 <= int(answer) <= len(names):
            return names[int(answer) - 1]
        matches = [name for name in names if name.upper() == answer.upper()]
        if matches:
            return matches[0]
        print(f"  '{answer}' is not on the list; type 1-{len(names)} or a name such as Q4_K_M.")


def write_modelfile(output_dir: Path, gguf: Path, chat_format) -> Path:
    """An Ollama Modelfile next to the GGUF: the model's own turn format and its end-of-turn token as the stop word
    (<end_of_turn> for Gemma 3 / 3n, <turn|> for Gemma 4). chat_format: ftg.chat_template.ChatFormat."""
    text = (
        "# Ollama: ollama create finetuned-gemma -f Modelfile   then   ollama run finetuned-gemma\n"
        f"FROM ./{gguf.name}\n"
        f'TEMPLATE """{chat_format.ollama_template()}"""\n'
        f'PARAMETER stop "{chat_format.end_of_turn}"\n'
    )
    path = output_dir / MODELFILE
    write_text_atomic(path, text)
    return path


def print_table(report: dict) -> None:
    print("\nGGUF check (against the merged model, "
          f"{report['reference']['positions']} positions of {report['reference']['conversations']} conversations):")
    print(f"  {'file':<34} {'size':>9} {'load':>5} {'tokens':>7} {'top-1':>7} {'mean KL':>9} {'reply':>6}  result")
    for row in report["files"]:
        size = f"{row['size_bytes'] / 1e6:,.0f} MB"
        if not row.get("load"):
            print(f"  {Path(row['file']).name:<34} {size:>9} {'NO':>5}  {'':>7} {'':>7} {'':>9} {'':>6}  FAILED")
            continue
        verdict = "ok" if not row["problems"] else ("FAILED" if row["required"] else "see notes")
        print(f"  {Path(row['file']).name:<34} {size:>9} {'yes':>5} {'same' if row['tokenizer']['ok'] else 'DIFF':>7} "
              f"{row['logits']['top1_agreement']:>7.1%} {row['logits']['mean_kl']:>9.3g} "
              f"{'ok' if row['reply']['ok'] else 'BAD':>6}  {verdict}")
        for note in row.get("problems", []):
            print(f"      - {note}")


NO_MAIN = "-"
"""gguf_file(..., main_type=NO_MAIN) names every file finetuned_gemma-<TYPE>.gguf until the main one is chosen."""


def extra_types(export) -> list[str]:
    """export.extra_quants, checked, without the forced main type."""
    extras = normalize_quants(export.extra_quants[0], export.extra_quants[1:]) if export.extra_quants else []
    return [q for q in extras if q.upper() != export.quant.upper()]


def ladder_types(export) -> list[str]:
    """The quants to measure: the forced export.quant alone, or export.quant_ladder smallest first."""
    from ftg.quant_ladder import ladder_order

    if export.quant.lower() != AUTO:
        return normalize_quants(export.quant, [])
    if not export.quant_ladder:
        raise UserError("export.quant is auto but export.quant_ladder is empty; list quants such as [Q4_K_M, Q8_0].")
    return ladder_order(normalize_quants(export.quant_ladder[0], export.quant_ladder[1:]))


def check_settings(export) -> tuple[list[str], str]:
    """(every quant type that may be written; precision f16/bf16) from the export settings, or a UserError naming
    the bad one."""
    quants = ladder_types(export) + extra_types(export)
    precision = export.gguf_precision.lower()
    if precision not in PRECISIONS:
        raise UserError(f"export.gguf_precision must be f16 or bf16, not '{export.gguf_precision}'.")
    return quants, precision


def style_rule(export) -> dict:
    return {"style_tolerance": export.style_tolerance, "min_assistant_top1": export.min_assistant_top1,
            "marker_tolerance": export.marker_tolerance}


def build_imatrix(cfg, merged: Path, tokenizer, full: Path, quants: list[str]):
    """The importance matrix of the K-quants from data/train_dataset.jsonl (ftg/imatrix.py), or None when
    export.imatrix is off, no K-quant is written, or there are no training conversations."""
    from ftg import imatrix

    export, train = cfg.export, cfg.paths.data_dir / TRAIN_FILE
    if not export.imatrix or not any(imatrix.uses_imatrix(q) for q in quants):
        return None
    if not train.exists():
        print(f"No {train}: the K-quants are made without an importance matrix.")
        return None
    print(f"Computing the importance matrix of the K-quants from {train} (up to {export.imatrix_tokens} tokens)...")
    found = imatrix.compute(merged, tokenizer, full, train, export.imatrix_tokens)
    print(f"  {len(found.data)} tensors mapped over {found.tokens} tokens of {found.conversations} conversations "
          f"in {found.seconds:.1f} s" + (f"; not mapped: {', '.join(found.skipped)}" if found.skipped else ""))
    return found


def write_quant(full: Path, output_dir: Path, quant: str, tensor_types: dict, imatrix) -> tuple[Path, bool]:
    """(the unquantized file quantized to quant, whether it was made with the importance matrix)."""
    from ftg.imatrix import uses_imatrix

    used = imatrix is not None and uses_imatrix(quant)
    out = quantize(full, gguf_file(output_dir, quant, NO_MAIN), quant, tensor_types, imatrix.data if used else None)
    return out, used


# long: the ladder of the module docstring: measure F16, then each rung until one keeps the style, then choose
def quantize_and_choose(cfg, merged: Path, tokenizer, full: Path, full_type: str, report: dict, reference,
                        tensor_types: dict, imatrix=None) -> str:
    """Quantize the ladder (or the forced quant), measure each against F16 and the merged model, record it all in
    report["ladder"]; returns the main file's type."""
    from ftg import quant_ladder

    export, output_dir = cfg.export, cfg.paths.output_dir
    forced = export.quant.lower() != AUTO
    rungs, rule, rows = ladder_types(export), style_rule(export), []
    if reference is None:  # nothing measured: the forced type, else Q8_0, practically lossless
        main_type = rungs[0] if forced else "Q8_0"
        out, used = write_quant(full, output_dir, main_type, tensor_types, imatrix)
        check_file(report, None, out, main_type, False, export)["imatrix"] = used
        report["ladder"] = {"choice": main_type, "reason": f"{main_type}: not measured (export.verify_gguf is off)"}
        return main_type
    print(f"Measuring which quant keeps your style ({', '.join(rungs)}; F16 is the baseline)...")
    probe = quant_ladder.build_probe(merged, tokenizer, cfg.paths.data_dir, export, cfg.chat)
    baseline = quant_ladder.measure(full, full_type, probe, cfg.chat, export)
    for quant in rungs:
        t = time.time()
        out, used = write_quant(full, output_dir, quant, tensor_types, imatrix)
        report["timings"][f"quantize_{quant}_s"] = round(time.time() - t, 1)
        check_file(report, reference, out, quant, False, export)["imatrix"] = used
        rows.append(quant_ladder.measure(out, quant, probe, cfg.chat, export))
        rows[-1]["imatrix"] = used
        kept, why = quant_ladder.keeps_style(rows[-1], baseline, rule)
        rows[-1]["keeps_style"], rows[-1]["why"] = kept, why
        if kept and not forced:
            break
    if forced:
        main_type, reason = rungs[0], rows[0]["why"]
        print(reason + ("" if rows[0]["keeps_style"] else f" (you asked for {rungs[0]}: it is the main file)"))
    else:
        main_type, reason = quant_ladder.choose(rows, baseline, rule)
    report["ladder"] = {"rule": rule, "forced": forced, "probe": probe.summary(), "baseline": baseline,
                        "rows": rows, "choice": main_type, "reason": reason}
    return main_type


def keep_files(output_dir: Path, report: dict, main_type: str, full_type: str, export) -> Path:
    """Make the chosen file output/finetuned_gemma.gguf; remove the ladder's other rungs (unless export.keep_ladder)
    and the F16 file (unless export.keep_f16 or it is the main one). Returns the main file."""
    import shutil

    main_file = gguf_file(output_dir, main_type, main_type)
    measured = {row["type"] for row in report.get("ladder", {}).get("rows", [])}
    extras = set(extra_types(export))
    for row in report["files"]:
        path = Path(row["file"])
        if row["type"] == main_type:
            (shutil.copyfile if row["type"] == full_type and export.keep_f16 else Path.replace)(path, main_file)
            row["file"] = str(main_file)
        elif ((row["type"] == full_type and not export.keep_f16)
              or (row["type"] in measured and row["type"] not in extras and not export.keep_ladder)):
            path.unlink(missing_ok=True)
            row["removed"] = True
    return main_file


def print_ladder(report: dict) -> None:
    """The one table of the quants and the choice with its reason (convert's last lines)."""
    from ftg.quant_ladder import table_lines

    ladder = report.get("ladder", {})
    if "rows" not in ladder:
        print(f"\nMain file: {ladder.get('reason', '')}")
        return
    probe = ladder["probe"]
    print(f"\nWhich quant keeps your style ({probe['conversations']} conversations, {probe['held_out']} held out; "
          f"{probe['assistant_positions']} reply tokens; your replies average "
          f"{ladder['baseline']['style']['person_words_mean']:g} words"
          + (f"; your marker: {probe['marker']!r}" if probe["marker"] else "") + "):")
    print("\n".join(table_lines(ladder["rows"], ladder["baseline"], ladder["rule"])))
    print(f"Main file: {ladder['reason'][0].upper() + ladder['reason'][1:]}.")


def build_reference(cfg, merged: Path, tokenizer, n_params: int):
    """What the merged model says on the held-out conversations (None when export.verify_gguf is off)."""
    from ftg import gguf_check

    export = cfg.export
    if not export.verify_gguf:
        return None
    conversations, source = gguf_check.check_conversations(cfg.paths.data_dir / EVAL_FILE, export.verify_prompts)
    print(f"Checking against the merged model on {len(conversations)} conversations from {source}...")
    return gguf_check.build_reference(merged, tokenizer, conversations, source, export.verify_tokens,
                                      export.reply_tokens, n_params)


def check_file(report: dict, reference, path: Path, gguf_type: str, required: bool, export) -> dict:
    """Check one GGUF against the reference and add its row to the report."""
    from ftg import gguf_check

    started = time.time()
    if reference is None:
        row = {"file": str(path), "size_bytes": path.stat().st_size}
    else:
        row = gguf_check.check_gguf(path, reference, export.reply_tokens)
        # The top-1 threshold applies to the unquantized file; a quant's agreement is reported, not judged.
        row["problems"] = gguf_check.problems(row, export.min_top1_agreement if required else 0.0)
    types = tensor_types(path)
    row.update(type=gguf_type, required=required, check_s=round(time.time() - started, 1),
               tensor_types=tensor_type_counts(types), per_layer_token_embd=types.get(PER_LAYER_TABLE))
    report["files"].append(row)
    return row


def fail_export(output_dir: Path, report: dict, merged: Path, full: Path, problems: list[str]) -> None:
    """The unquantized file failed its check: record why in gguf_report.json and stop before quantizing."""
    report["status"] = "failed"
    layout = gemma3n_layout_problems(merged)
    if layout:
        report["gemma3n_layout_problems"] = layout
    write_json(output_dir / GGUF_REPORT, report)
    print_table(report)
    why = (f" llama.cpp hard-codes the real Gemma-3n layout and this model departs from it: {'; '.join(layout)}."
           if layout else "")
    raise UserError(
        f"GGUF check FAILED for {full.name}: {'; '.join(problems)}. The GGUF does not behave like the merged model, "
        f"so no quantized files were made; do not use {full.name}.{why} Figures: {output_dir / GGUF_REPORT}"
    )


def export_without_runtime(output_dir: Path, merged: Path, record: dict, n_params: int) -> Path:
    """No llama.cpp runtime (prepare_venv could not install it): the converter writes a Q8_0 GGUF by itself; the
    K-quants and the checks that need llama.cpp are skipped, and gguf_report.json says so."""
    print(f"{RUNTIME_MISSING}\nWriting a Q8_0 GGUF with llama.cpp's converter alone; skipped: the K-quants and the GGUF "
          "check.")
    check_free_space(output_dir, gguf_bytes(n_params, ["Q8_0"], full_precision=False), "the GGUF file")
    main_file = convert_hf_to_gguf(merged, gguf_file(output_dir, "Q8_0", "Q8_0"), "q8_0", n_params)
    report = {"status": f"not checked: {RUNTIME_MISSING}", "merged_model": str(merged),
              "run_name": record.get("run_name", ""), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "skipped": ["K-quants", "the GGUF check (load, tokenizer, logits, reply)"],
              "files": [{"file": str(main_file), "type": "Q8_0", "size_bytes": main_file.stat().st_size,
                         "made_by": "llama.cpp's converter (--outtype q8_0)"}]}
    write_json(output_dir / GGUF_REPORT, report)
    modelfile = write_modelfile(output_dir, main_file, ChatFormat.from_tokenizer(load_tokenizer(merged)))
    print(f"\nReport: {output_dir / GGUF_REPORT}\nOllama Modelfile: {modelfile}")
    return main_file


def run(cfg) -> Path:
    """Convert output/merged to GGUF, check it, quantize and check each quant, keep the smallest that keeps your
    style as the main file (ftg/quant_ladder.py) or the quant you forced; returns the main GGUF file."""
    from tqdm import tqdm

    export, output_dir = cfg.export, cfg.paths.output_dir
    quants, precision = check_settings(export)
    require_converter()
    merged = merged_dir(output_dir)
    if not (merged / "config.json").exists():
        raise UserError(f"no merged model in {merged}. Run merge_lora (or convert_to_gguf, which merges first).")
    record_path = merged / MERGE_RECORD
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else {}
    print(f"Converting {merged}" + (f" (run {record['run_name']})" if record.get("run_name") else ""))
    n_params = count_parameters(merged)
    if not runtime_available():
        return export_without_runtime(output_dir, merged, record, n_params)
    check_free_space(output_dir, gguf_bytes(n_params, quants), "the GGUF files")

    started = time.time()
    full_type = PRECISIONS[precision]
    full = convert_hf_to_gguf(merged, gguf_file(output_dir, full_type, NO_MAIN), precision, n_params)
    timings = {"convert_s": round(time.time() - started, 1)}
    tokenizer = load_tokenizer(merged)  # once: the reference, the imatrix, the ladder and the Modelfile use it
    reference = build_reference(cfg, merged, tokenizer, n_params)
    timings["reference_s"] = round(time.time() - started - timings["convert_s"], 1)
    report = {"status": "running", "merged_model": str(merged), "run_name": record.get("run_name", ""),
              "created": time.strftime("%Y-%m-%d %H:%M:%S"), "min_top1_agreement": export.min_top1_agreement,
              "reference": reference.summary() if reference else {}, "files": [], "timings": timings}
    row = check_file(report, reference, full, full_type, True, export)
    if reference is not None and row["problems"]:
        fail_export(output_dir, report, merged, full, row["problems"])

    tensor_types = tensor_types_for(merged)  # 3n / 4: per_layer_token_embd stays Q8_0 (Ollama)
    report["tensor_type_overrides"] = tensor_types
    t = time.time()
    imatrix = build_imatrix(cfg, merged, tokenizer, full, quants)
    report["imatrix"] = imatrix.summary() if imatrix else None
    timings["imatrix_s"] = round(time.time() - t, 1)
    t = time.time()
    main_type = quantize_and_choose(cfg, merged, tokenizer, full, full_type, report, reference, tensor_types, imatrix)
    timings["ladder_s"] = round(time.time() - t, 1)
    done = {row["type"] for row in report["files"]}
    for quant in tqdm([q for q in extra_types(export) if q not in done], desc="extra quants", unit="file"):
        t = time.time()
        out, used = write_quant(full, output_dir, quant, tensor_types, imatrix)
        timings[f"quantize_{quant}_s"] = round(time.time() - t, 1)
        check_file(report, reference, out, quant, False, export)["imatrix"] = used
    main_file = keep_files(output_dir, report, main_type, full_type, export)
    report["status"] = "passed" if reference is not None else "not checked (export.verify_gguf is off)"
    timings["total_s"] = round(time.time() - started, 1)
    write_json(output_dir / GGUF_REPORT, report)
    if reference is not None:
        print_table(report)
        print_ladder(report)
    modelfile = write_modelfile(output_dir, main_file, ChatFormat.from_tokenizer(tokenizer))
    print(f"\nReport: {output_dir / GGUF_REPORT}\nOllama Modelfile: {modelfile} (FROM ./{main_file.name}, "
          f"{main_type})")
    return main_file


def gemma3n_layout_problems(model_dir: Path) -> list[str]:
    """For a Gemma-3n, how its config departs from the layout llama.cpp hard-codes (the real E2B/E4B: none)."""
    from transformers import AutoConfig

    from ftg.gemma3n_export import llama_cpp_layout_problems

    config = AutoConfig.from_pretrained(model_dir)
    return llama_cpp_layout_problems(config) if config.model_type.startswith("gemma3n") else []


def estimate_parameters(cfg, run_name: str) -> int:
    """Weights of the merged model (or of the latest run's base) for the menu's size column; 0 when unknown."""
    merged = merged_dir(cfg.paths.output_dir)
    if (merged / "config.json").exists():
        return count_parameters(merged)
    try:
        return count_parameters(Path(read_run(find_run(cfg.paths.output_dir, run_name)).base_model))
    except UserError:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, SECTIONS)
    args = parser.parse_args(argv)

    def body() -> int:
        cfg = config_from_args(args)
        check_settings(cfg.export)
        print("Settings:\n" + describe(cfg, SECTIONS))
        main_file = run(cfg)
        print(f"\nDone: {main_file}\nNext: report (the style report), chat, or load it in LM Studio / KoboldCpp / "
              "Ollama.")
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
