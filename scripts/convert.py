"""Turn the merged model into checked GGUF files for LM Studio, KoboldCpp and Ollama.

Reads:   output/merged/ (made by merge_lora; merged first unless --skip-merge), data/eval_dataset.jsonl for the
         logit check (a built-in prompt set when it is missing).
Writes:  output/finetuned_gemma-F16.gguf   (or -BF16) the unquantized GGUF, checked first, quantized from
         output/finetuned_gemma.gguf       the main file, in export.quant (Q4_K_M by default)
         output/finetuned_gemma-<TYPE>.gguf  one per export.extra_quants
         output/gguf_report.json           the figures of every check (see ftg/gguf_check.py)
         output/Modelfile                  for `ollama create`

Every GGUF is checked against the merged model: it loads, tokenizes like HF, predicts the same next token (the
unquantized file must agree on >= 99% of positions, or the export fails), and replies through its embedded chat
template without template tags, stopping at <end_of_turn>.

Run:
    convert_to_gguf.bat / ./convert_to_gguf.sh       merge if needed, then convert (a menu asks the quant type)
    convert_only.bat / ./convert_only.sh             only convert output/merged (python scripts/convert.py --skip-merge)
    python scripts/convert.py --quant Q5_K_M --extra-quants Q8_0
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from ftg.config import add_config_arguments, config_from_args, describe
from ftg.errors import UserError, run_main
from ftg.files import check_free_space, write_json, write_text_atomic
from ftg.training_data import EVAL_FILE

QUANTS = {
    # type: (llama.cpp ftype name, bits per weight as llama.cpp lists them for Llama-7B, trade-off)
    "Q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", 8.50, "practically lossless, the biggest"),
    "Q6_K": ("LLAMA_FTYPE_MOSTLY_Q6_K", 6.56, "near lossless"),
    "Q5_K_M": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", 5.69, "very good"),
    "Q4_K_M": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", 4.89, "good balance: the usual choice"),
    "Q3_K_M": ("LLAMA_FTYPE_MOSTLY_Q3_K_M", 3.91, "smallest, noticeably worse"),
}
PRECISIONS = {"f16": "F16", "bf16": "BF16"}
MAIN_FILE = "finetuned_gemma.gguf"
REPORT_FILE = "gguf_report.json"


def gguf_path(output_dir: Path, gguf_type: str, main_quant: str) -> Path:
    name = MAIN_FILE if gguf_type == main_quant else f"finetuned_gemma-{gguf_type}.gguf"
    return output_dir / name


def normalize_quants(main: str, extra: list[str]) -> list[str]:
    """The quant types to write, main first, checked against QUANTS (case-insensitive)."""
    known = {name.upper(): name for name in QUANTS}
    chosen = []
    for name in [main, *extra]:
        quant = known.get(str(name).strip().upper())
        if quant is None:
            raise UserError(f"unknown quant type '{name}'. Choose one of {', '.join(QUANTS)} (export.quant / --quant).")
        if quant not in chosen:
            chosen.append(quant)
    return chosen


def count_parameters(model_dir: Path) -> int:
    """Weights in a safetensors folder, read from the file headers (nothing is loaded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(path, "np") as handle:
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                total += math.prod(shape)
    return total


def choose_quant(default: str, n_params: int, ask=input) -> str:
    """The interactive menu: each type with its estimated size and trade-off; Enter keeps `default`."""
    names = list(QUANTS)
    print("\nWhich GGUF quantization? Smaller files run faster and need less memory, but answer a little worse.")
    for number, name in enumerate(names, 1):
        _, bits, note = QUANTS[name]
        size = f"~{n_params * bits / 8 / 1e9:5.2f} GB" if n_params else f"{bits:.1f} bits/weight"
        mark = "  <- default" if name == default else ""
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


def convert_to_gguf_file(model_dir: Path, out: Path, precision: str, n_params: int) -> Path:
    """Run llama.cpp's convert_hf_to_gguf.py on a HF folder (any Gemma the converter knows); returns `out`.

    The converter's messages go to <out>.log; a bar follows the file as it grows (2 bytes per weight).
    """
    from setup_tools import CONVERTER_SCRIPT
    from tqdm import tqdm

    if not CONVERTER_SCRIPT.exists():
        raise UserError(f"llama.cpp's converter is missing ({CONVERTER_SCRIPT}). Run prepare_venv again "
                        "(or python scripts/setup_tools.py).")
    partial = out.with_name(out.name + ".partial")
    log = out.with_name(out.name + ".log")
    partial.unlink(missing_ok=True)
    command = [sys.executable, str(CONVERTER_SCRIPT), str(model_dir), "--outfile", str(partial), "--outtype", precision]
    env = dict(os.environ, PYTHONUTF8="1")
    with open(log, "w", encoding="utf-8") as log_handle, tqdm(total=n_params * 2, unit="B", unit_scale=True,
                                                             desc=f"convert {out.name}") as bar:
        process = subprocess.Popen(command, stdout=log_handle, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            time.sleep(0.5)
            if partial.exists():
                bar.update(partial.stat().st_size - bar.n)
    if process.returncode != 0 or not partial.exists():
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise UserError(f"llama.cpp's converter failed on {model_dir}: {lines[-1] if lines else 'no output'} "
                        f"(full log: {log})")
    partial.replace(out)
    log.unlink()
    return out


def quantize(source: Path, out: Path, quant: str) -> Path:
    """Quantize a GGUF with llama.cpp (through llama-cpp-python); returns `out`."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTS[quant][0])
    partial = out.with_name(out.name + ".partial")
    log = out.with_name(out.name + ".log")
    with native_output_to(log):
        code = llama_cpp.llama_model_quantize(str(source).encode("utf-8"), str(partial).encode("utf-8"),
                                              ctypes.byref(params))
    if code != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        raise UserError(f"llama.cpp could not quantize {source} to {quant} (code {code}). Check the disk space; "
                        f"llama.cpp's messages are in {log}.")
    partial.replace(out)
    log.unlink()
    return out


@contextlib.contextmanager
def native_output_to(log: Path):
    """Send what llama.cpp's C code prints (a line per tensor while quantizing) to a log file, not the console."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "wb") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


OLLAMA_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""
"""Gemma's turn format in Ollama's Go template language (as in Ollama's own gemma3 model)."""


def write_modelfile(output_dir: Path, gguf: Path) -> Path:
    """An Ollama Modelfile next to the GGUF: Gemma's turn format and <end_of_turn> as the stop word."""
    text = (
        "# Ollama: ollama create finetuned-gemma -f Modelfile   then   ollama run finetuned-gemma\n"
        f"FROM ./{gguf.name}\n"
        f'TEMPLATE """{OLLAMA_TEMPLATE}"""\n'
        'PARAMETER stop "<end_of_turn>"\n'
    )
    path = output_dir / "Modelfile"
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


def print_app_hints(main_file: Path, modelfile: Path) -> None:
    print(f"""
Use it:
  LM Studio: lms import "{main_file}"   (or copy it to ~/.lmstudio/models/me/finetuned-gemma/)
  KoboldCpp: koboldcpp --model "{main_file}"   (or pick the file in its launcher; it reads the chat template from the file)
  Ollama:    cd "{modelfile.parent}" && ollama create finetuned-gemma -f Modelfile && ollama run finetuned-gemma""")


def run(cfg, run_name: str = "", skip_merge: bool = False) -> Path:
    """Merge (unless skip_merge), convert, quantize and check; returns the main GGUF file."""
    from setup_tools import CONVERTER_SCRIPT

    from ftg import gguf_check
    from merge_lora import merged_dir

    export = cfg.export
    quants = normalize_quants(export.quant, export.extra_quants)
    precision = export.gguf_precision.lower()
    if precision not in PRECISIONS:
        raise UserError(f"export.gguf_precision must be f16 or bf16, not '{export.gguf_precision}'.")
    if not CONVERTER_SCRIPT.exists():
        raise UserError(f"llama.cpp's converter is missing ({CONVERTER_SCRIPT}). Run prepare_venv again "
                        "(or python scripts/setup_tools.py).")
    output_dir = cfg.paths.output_dir
    if skip_merge:
        merged = merged_dir(cfg)
        if not (merged / "config.json").exists():
            raise UserError(f"no merged model in {merged}. Run merge_lora (or convert_to_gguf, which merges first).")
    else:
        from merge_lora import run as merge

        merged = merge(cfg, run_name)
    record_path = merged / "merge.json"
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else {}
    print(f"Converting {merged}" + (f" (run {record['run_name']})" if record.get("run_name") else ""))

    n_params = count_parameters(merged)
    # 2 bytes per weight for the f16/bf16 file, bits/8 per weight for each quant, 5% margin for metadata.
    need = n_params * (2 + sum(QUANTS[q][1] / 8 for q in quants)) * 1.05
    check_free_space(output_dir, int(need), "the GGUF files")

    started = time.time()
    full_type = PRECISIONS[precision]
    full = convert_to_gguf_file(merged, gguf_path(output_dir, full_type, quants[0]), precision, n_params)
    timings = {"convert_s": round(time.time() - started, 1)}

    reference = None
    if export.verify_gguf:
        conversations, source = gguf_check.read_eval_conversations(
            cfg.paths.data_dir / EVAL_FILE, export.verify_prompts)
        print(f"Checking against the merged model on {len(conversations)} conversations from {source}...")
        t = time.time()
        reference = gguf_check.build_reference(merged, conversations, source, export.verify_tokens,
                                               export.reply_tokens, n_params)
        timings["reference_s"] = round(time.time() - t, 1)

    report = {
        "status": "running",
        "merged_model": str(merged),
        "run_name": record.get("run_name", ""),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "min_top1_agreement": export.min_top1_agreement,
        "reference": reference.summary() if reference else {},
        "files": [],
        "timings": timings,
    }

    def check(path: Path, gguf_type: str, required: bool) -> dict:
        t = time.time()
        if reference is None:
            row = {"file": str(path), "size_bytes": path.stat().st_size}
        else:
            row = gguf_check.check_gguf(path, reference, export.reply_tokens)
            # The top-1 threshold applies to the unquantized file; a quant's agreement is reported, not judged.
            row["problems"] = gguf_check.problems(row, export.min_top1_agreement if required else 0.0)
        row.update(type=gguf_type, required=required, check_s=round(time.time() - t, 1))
        report["files"].append(row)
        return row

    row = check(full, full_type, required=True)
    if reference is not None and row["problems"]:
        report["status"] = "failed"
        layout = gemma3n_layout_problems(merged)
        if layout:
            report["gemma3n_layout_problems"] = layout
        write_report(output_dir, report)
        print_table(report)
        why = (f" llama.cpp hard-codes the real Gemma-3n layout and this model departs from it: {'; '.join(layout)}."
               if layout else "")
        raise UserError(
            f"GGUF check FAILED for {full.name}: {'; '.join(row['problems'])}. The GGUF does not behave like the "
            f"merged model, so no quantized files were made; do not use {full.name}.{why} "
            f"Figures: {output_dir / REPORT_FILE}"
        )

    from tqdm import tqdm

    for quant in tqdm(quants, desc="quantize", unit="file"):
        t = time.time()
        out = quantize(full, gguf_path(output_dir, quant, quants[0]), quant)
        timings[f"quantize_{quant}_s"] = round(time.time() - t, 1)
        check(out, quant, required=False)

    report["status"] = "passed" if reference is not None else "not checked (export.verify_gguf is off)"
    timings["total_s"] = round(time.time() - started, 1)
    write_report(output_dir, report)
    if reference is not None:
        print_table(report)
    main_file = gguf_path(output_dir, quants[0], quants[0])
    modelfile = write_modelfile(output_dir, main_file)
    print(f"\nReport: {output_dir / REPORT_FILE}\nOllama Modelfile: {modelfile}")
    if export.style_report and reference is not None:
        import report as style_report

        style_report.run(cfg, record.get("run_name", run_name))
    print_app_hints(main_file, modelfile)
    return main_file


def gemma3n_layout_problems(model_dir: Path) -> list[str]:
    """For a Gemma-3n, how its config departs from the layout llama.cpp hard-codes (the real E2B/E4B: none)."""
    from transformers import AutoConfig

    from ftg.gemma3n_export import llama_cpp_layout_problems

    config = AutoConfig.from_pretrained(model_dir)
    return llama_cpp_layout_problems(config) if config.model_type.startswith("gemma3n") else []


def write_report(output_dir: Path, report: dict) -> Path:
    path = output_dir / REPORT_FILE
    write_json(path, report)
    return path


def estimate_parameters(cfg, run_name: str) -> int:
    """Weights of the merged model (or of the latest run's base) for the menu's size column; 0 when unknown."""
    from ftg.runs import find_run, read_run
    from merge_lora import merged_dir

    if (merged_dir(cfg) / "config.json").exists():
        return count_parameters(merged_dir(cfg))
    try:
        return count_parameters(Path(read_run(find_run(cfg.paths.output_dir, run_name))["base_model"]))
    except UserError:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="", help="run name under output/runs (or a run folder); default: the latest")
    parser.add_argument("--skip-merge", action="store_true",
                        help="only convert the existing output/merged (this is what convert_only runs)")
    add_config_arguments(parser, ["paths", "export"])
    args = parser.parse_args(argv)

    def body() -> int:
        cfg = config_from_args(args)
        if getattr(args, "export.quant") is None and sys.stdin.isatty():
            normalize_quants(cfg.export.quant, [])
            cfg.export.quant = choose_quant(cfg.export.quant, estimate_parameters(cfg, args.run))
        print("Settings:\n" + describe(cfg, ["paths", "export"]))
        main_file = run(cfg, args.run, args.skip_merge)
        print(f"\nDone: {main_file}\nNext: chat (talk to it), or load it in LM Studio / KoboldCpp / Ollama.")
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
