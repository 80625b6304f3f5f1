"""Making GGUF files: llama.cpp's converter (HF folder -> F16/BF16 GGUF), quantizing, and the base model's GGUF.

convert makes the tuned files with these; chat --compare and report make output/base_model.gguf with the same
functions, so the two models are compared in the same quant type, made the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from ftg.errors import UserError
from ftg.files import check_free_space, write_json
from ftg.llama_runtime import quantize as runtime_quantize
from ftg.paths import BASE_GGUF, BASE_RECORD, CONVERTER_SCRIPT, GGUF_REPORT, MERGE_RECORD, merged_dir


class Quant(NamedTuple):
    bits_per_weight: float
    """As llama.cpp lists them for Llama-7B; the file size is about parameters x bits / 8."""
    note: str


QUANTS = {
    "Q8_0": Quant(8.50, "practically lossless, the biggest"),
    "Q6_K": Quant(6.56, "near lossless"),
    "Q5_K_M": Quant(5.69, "very good"),
    "Q4_K_M": Quant(4.89, "good balance: the usual choice"),
    "Q3_K_M": Quant(3.91, "smallest, noticeably worse"),
}
PRECISIONS = {"f16": "F16", "bf16": "BF16"}
"""export.gguf_precision -> the type name of the unquantized file (2 bytes per weight)."""
SIZE_MARGIN = 1.05
"""GGUF files are a little bigger than weights x bits: metadata, the tokenizer, unquantized norms (5 %)."""


def normalize_quants(main: str, extra: list[str]) -> list[str]:
    """The quant types to write, main first, checked against QUANTS (case-insensitive)."""
    known = {name.upper(): name for name in QUANTS}
    chosen = []
    for name in [main, *extra]:
        quant = known.get(str(name).strip().upper())
        if quant is None:
            raise UserError(f"unknown quant type '{name}'. Choose auto (export.quant only) or one of {', '.join(QUANTS)} (export.quant / --quant).")
        if quant not in chosen:
            chosen.append(quant)
    return chosen


def gguf_bytes(n_params: int, quants: list[str], full_precision: bool = True) -> int:
    """Predicted disk space of the files: 2 bytes per weight for the F16/BF16 file, bits / 8 for each quant."""
    bytes_per_weight = (2 if full_precision else 0) + sum(QUANTS[q].bits_per_weight / 8 for q in quants)
    return int(n_params * bytes_per_weight * SIZE_MARGIN)


def count_parameters(model_dir: Path) -> int:
    """Weights in a safetensors folder, read from the file headers (nothing is loaded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(path, "np") as handle:
            for key in handle.keys():
                total += math.prod(handle.get_slice(key).get_shape())
    return total


def require_converter() -> Path:
    if not CONVERTER_SCRIPT.exists():
        raise UserError(f"llama.cpp's converter is missing ({CONVERTER_SCRIPT}). Run prepare_venv again "
                        "(or python scripts/setup_tools.py).")
    return CONVERTER_SCRIPT


def convert_hf_to_gguf(model_dir: Path, out: Path, precision: str, n_params: int) -> Path:
    """Run llama.cpp's convert_hf_to_gguf.py on a HF folder (any Gemma the converter knows); returns `out`.

    precision: the converter's --outtype: f16 or bf16 (2 bytes per weight), or q8_0 (8.5 bits), which it writes by
    itself. The converter's messages go to <out>.log; a bar follows the file as it grows.
    """
    from tqdm import tqdm

    converter = require_converter()
    ensure_tokenizer_model(model_dir)
    partial = out.with_name(out.name + ".partial")
    log = out.with_name(out.name + ".log")
    partial.unlink(missing_ok=True)
    command = [sys.executable, str(converter), str(model_dir), "--outfile", str(partial), "--outtype", precision]
    env = dict(os.environ, PYTHONUTF8="1")
    expected = int(n_params * (2 if precision in PRECISIONS else QUANTS["Q8_0"].bits_per_weight / 8))
    with open(log, "w", encoding="utf-8") as log_handle, tqdm(total=expected, unit="B", unit_scale=True,
                                                             desc=f"convert {out.name}") as bar:
        process = subprocess.Popen(command, stdout=log_handle, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            time.sleep(0.5)
            if partial.exists():
                bar.update(partial.stat().st_size - bar.n)
    if process.returncode < 0:  # killed: it prints nothing, so its last line would only say how far it got
        try:
            name = signal.Signals(-process.returncode).name
        except ValueError:
            name = f"signal {-process.returncode}"
        raise UserError(f"llama.cpp's converter was stopped by {name} while converting {model_dir}"
                        + (" (usually: the computer ran out of memory; close other programs and run this step "
                           "again)" if name == "SIGKILL" else "") + f". What it did until then: {log}")
    if process.returncode != 0 or not partial.exists():
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise UserError(f"llama.cpp's converter failed on {model_dir}: {lines[-1] if lines else 'no output'} "
                        f"(full log: {log})")
    partial.replace(out)
    log.unlink()
    return out


SENTENCEPIECE_FAMILIES = ("gemma3", "gemma3_text", "gemma3n", "gemma3n_text")
"""Model types whose llama.cpp conversion reads tokenizer.model (Gemma 4's reads tokenizer.json alone)."""


def ensure_tokenizer_model(model_dir: Path) -> None:
    """Write tokenizer.model from tokenizer.json into a Gemma 3 / 3n folder that lacks one (transformers 5 saves
    none, so a merged folder has none): without it llama.cpp's converter writes a GPT-2 style vocabulary whose
    byte tokens are words, and the GGUF prints "<0xF0><0x9F>..." for a rare emoji (ftg.tokenizer_model).
    tokenizer_config.json gets the Hub's added_tokens_decoder when it has none, which the converter reads the
    control and whitespace tokens from (without it a run of spaces splits differently from HF)."""
    from ftg.tokenizer_model import (TOKENIZER_MODEL, added_tokens_decoder, tokenizer_json_vocabulary,
                                     write_tokenizer_model)

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if (config.get("model_type") not in SENTENCEPIECE_FAMILIES or (model_dir / TOKENIZER_MODEL).exists()
            or not (model_dir / "tokenizer.json").exists()):
        return
    try:
        pieces, scores, types = tokenizer_json_vocabulary(model_dir)
    except ValueError as exc:  # not Gemma's kind of vocabulary: convert as it is, the decode check will judge it
        print(f"  No tokenizer.model written: {exc}.")
        return
    write_tokenizer_model(model_dir / TOKENIZER_MODEL, pieces, scores, types)
    config_path = model_dir / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    if "added_tokens_decoder" not in tokenizer_config:
        tokenizer_config["added_tokens_decoder"] = added_tokens_decoder(pieces, types)
        write_json(config_path, tokenizer_config)
    print(f"  Wrote {model_dir / TOKENIZER_MODEL} from tokenizer.json, so llama.cpp keeps byte tokens as bytes.")


PER_LAYER_TABLE_TYPE = {r"^per_layer_token_embd\.weight$": "Q8_0"}
"""Gemma-3n / Gemma 4: the per-layer embedding table (262144 x layers x 256) stays Q8_0 in every quant: Ollama's
engine rejects K-quants of it (reported by Unsloth, July 2025), and Q8_0 costs ~0.6 GB more than Q4_K on E2B."""


def tensor_types_for(model_dir: Path) -> dict[str, str]:
    """The per-tensor quant overrides a merged model needs (PER_LAYER_TABLE_TYPE for 3n / 4, else none)."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    model_type = config.get("model_type", "")
    return dict(PER_LAYER_TABLE_TYPE) if model_type.startswith(("gemma3n", "gemma4")) else {}


def tensor_types(path: Path) -> dict[str, str]:
    """{tensor name: ggml type name} of a GGUF file, read from its header alone (nothing is loaded)."""
    return {name: info[0] for name, info in gguf_header(path)[1].items()}


def gguf_header(path: Path) -> tuple[str, dict[str, tuple[str, tuple[int, ...], int]]]:
    """(general.architecture, {tensor name: (ggml type name, shape (ne[0], ne[1], ...), file offset of its data)})
    from a GGUF's header alone. Why not gguf-py's GGUFReader: it builds a numpy view of every metadata value first, and for Gemma's 262,144-token
    vocabulary that took 10-25 s per file on 2 cores (about 85 % of the tiny export test's profiled time). This
    walks the header with struct and skips the values: 0.7 s for the demo GGUF on 2 busy cores.
    tests/test_llama_runtime.py::test_quantize_with_a_tensor_override checks it against GGUFReader.
    """
    import mmap
    import struct

    from gguf import GGMLQuantizationType, GGUFValueType

    fixed = {GGUFValueType.UINT8: 1, GGUFValueType.INT8: 1, GGUFValueType.BOOL: 1, GGUFValueType.UINT16: 2,
             GGUFValueType.INT16: 2, GGUFValueType.UINT32: 4, GGUFValueType.INT32: 4, GGUFValueType.FLOAT32: 4,
             GGUFValueType.UINT64: 8, GGUFValueType.INT64: 8, GGUFValueType.FLOAT64: 8}
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            raise UserError(f"{path} is not a GGUF file.")
        n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)  # after the magic and the uint32 version
        pos = 24

        def after_value(pos: int, kind: int) -> int:
            if kind == GGUFValueType.STRING:
                return pos + 8 + struct.unpack_from("<Q", data, pos)[0]
            if kind == GGUFValueType.ARRAY:
                item_kind, count = struct.unpack_from("<IQ", data, pos)
                pos += 12
                if item_kind in fixed:
                    return pos + fixed[item_kind] * count
                for _ in range(count):  # strings (the vocabulary): each carries its own length
                    pos = after_value(pos, item_kind)
                return pos
            return pos + fixed[kind]

        architecture, alignment = "", 32  # GGUF's default alignment of the data section
        for _ in range(n_kv):
            length = struct.unpack_from("<Q", data, pos)[0]
            key = data[pos + 8:pos + 8 + length]
            pos += 8 + length
            if key == b"general.architecture":  # a string: uint64 length, then the bytes
                size = struct.unpack_from("<Q", data, pos + 4)[0]
                architecture = data[pos + 12:pos + 12 + size].decode("utf-8")
            if key == b"general.alignment":
                alignment = struct.unpack_from("<I", data, pos + 4)[0]
            pos = after_value(pos + 4, struct.unpack_from("<I", data, pos)[0])
        tensors = {}
        for _ in range(n_tensors):
            length = struct.unpack_from("<Q", data, pos)[0]
            name = data[pos + 8:pos + 8 + length].decode("utf-8")
            pos += 8 + length
            n_dims = struct.unpack_from("<I", data, pos)[0]
            shape = struct.unpack_from(f"<{n_dims}Q", data, pos + 4)
            pos += 4 + 8 * n_dims
            kind, offset = struct.unpack_from("<IQ", data, pos)
            tensors[name] = (GGMLQuantizationType(kind).name, shape, offset)
            pos += 4 + 8  # the type and the data offset (from the start of the data section)
    start = -(-pos // alignment) * alignment
    return architecture, {name: (kind, shape, start + offset) for name, (kind, shape, offset) in tensors.items()}


def tensor_type_counts(types: dict[str, str]) -> dict[str, int]:
    """{ggml type name: tensors of that type} from tensor_types()."""
    counts: dict[str, int] = {}
    for type_name in types.values():
        counts[type_name] = counts.get(type_name, 0) + 1
    return dict(sorted(counts.items()))


def quantize(source: Path, out: Path, quant: str, tensor_types: dict[str, str] | None = None,
             imatrix: dict | None = None) -> Path:
    """Quantize a GGUF with llama.cpp into `out` (written as .partial, renamed when complete); returns `out`.

    tensor_types: tensor-name pattern -> type for tensors that keep another type, e.g. tensor_types_for(merged).
    imatrix: GGUF tensor name -> importance matrix (ftg/imatrix.py), or None.
    """
    runtime_quantize(source, out, quant, tensor_types, imatrix)
    return out


# ----------------------------------------------------------------------------------------------------------------
# The base model as a GGUF, for chat --compare and the report
# ----------------------------------------------------------------------------------------------------------------


def base_model_dir(cfg) -> Path:
    """The base of the tuned model: --model when given, else the base that merge_lora merged into
    (output/merged/merge.json), else the one download_model selected."""
    from ftg.models import resolve_model_dir

    merge_record = merged_dir(cfg.paths.output_dir) / MERGE_RECORD
    if not cfg.model.model and merge_record.exists():
        base = Path(json.loads(merge_record.read_text(encoding="utf-8"))["base_model"])
        if not (base / "config.json").exists():
            raise UserError(f"the base model {base} (named in {merge_record}) is gone. Put it back (download_model) "
                            "or pass --model FOLDER.")
        return base
    return resolve_model_dir(cfg)


def folder_fingerprint(folder: Path) -> str:
    """Name, size and modification time of the model files: changes when the folder's model changes (cheap to read,
    unlike hashing gigabytes)."""
    listing = [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
               for p in sorted(folder.iterdir()) if p.suffix in (".json", ".safetensors", ".jinja", ".model")]
    return hashlib.sha256(json.dumps(listing).encode("utf-8")).hexdigest()[:16]


def main_quant(cfg) -> str:
    """The tuned main file's type: export.quant, or with auto the type the quant ladder chose (gguf_report.json;
    Q4_K_M before any export), so the base model is compared in the same type."""
    if cfg.export.quant.lower() != "auto":
        return normalize_quants(cfg.export.quant, [])[0]
    try:
        chosen = json.loads((cfg.paths.output_dir / GGUF_REPORT).read_text(encoding="utf-8"))["ladder"]["choice"]
    except (OSError, ValueError, KeyError, TypeError):
        return "Q4_K_M"
    return chosen if chosen in PRECISIONS.values() else normalize_quants(chosen, [])[0]


def ensure_base_gguf(cfg, base_dir: Path | None = None) -> Path:
    """output/base_model.gguf: the base model (base_dir, else base_model_dir(cfg)) converted once to export.quant,
    like the tuned main file, so the two compare fairly. Reused while base_model.json matches the base folder, the
    quant type and the precision."""
    base_dir = Path(base_dir or base_model_dir(cfg)).resolve()
    quant = main_quant(cfg)
    precision = cfg.export.gguf_precision.lower()
    output_dir = cfg.paths.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    target, record_path = output_dir / BASE_GGUF, output_dir / BASE_RECORD
    record = {"base_model": str(base_dir), "fingerprint": folder_fingerprint(base_dir), "quant": quant,
              "precision": precision}
    if target.exists() and record_path.exists():
        try:
            if json.loads(record_path.read_text(encoding="utf-8")) == record:
                print(f"Base model GGUF: {target} (made before from {base_dir})")
                return target
        except (OSError, json.JSONDecodeError):
            pass  # a damaged record: convert again
    n_params = count_parameters(base_dir)
    check_free_space(output_dir, gguf_bytes(n_params, [quant]), "the base model GGUF")
    print(f"Converting the base model {base_dir} to GGUF ({quant}), once, to compare it with the tuned model...")
    record_path.unlink(missing_ok=True)
    full = convert_hf_to_gguf(base_dir, output_dir / f"base_model-{precision.upper()}.gguf", precision, n_params)
    try:
        (full.replace(target) if quant in PRECISIONS.values() else quantize(full, target, quant))
    finally:
        full.unlink(missing_ok=True)
    write_json(record_path, record)
    print(f"Base model GGUF: {target}")
    return target
