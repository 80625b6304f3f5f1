"""The llama.cpp runtime, behind one small interface: open a GGUF, tokenize, logits, generate; quantize.

The runtime is the prebuilt `llama-cpp-py-sync` wheel (llama.cpp's own C API through CFFI, libllama shipped in the
wheel: nothing to compile, on Linux, Windows and macOS). prepare_venv installs it; when it could not, every function
here raises UserError with RUNTIME_MISSING, one line that says what is missing, which steps need it and what to do.
The rest of the pipeline (prepare, train, merge, and the converter's own F16/BF16/Q8_0 GGUF) does not need it.

    with open_model(path, n_ctx=2048) as model:
        ids = [model.bos_id] + model.tokenize("The capital of France is")
        logits = model.logits(ids)                      # float32 [len(ids), n_vocab]
        reply = model.detokenize(list(model.generate(ids, max_tokens=16)))
    quantize(f16_path, q4_path, "Q4_K_M", tensor_types={"per_layer_token_embd": "Q8_0"})
"""

from __future__ import annotations

import os
import re
import struct
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ftg.errors import UserError

PACKAGE = "llama-cpp-py-sync"
RUNTIME_MISSING = (
    "the llama.cpp runtime (llama-cpp-py-sync) is not installed, so K-quants (Q4_K_M...), the GGUF check and chat "
    "cannot run. Run prepare_venv again and read its llama.cpp line; training, merging and the Q8_0 GGUF work without it."
)
QUANTS = ("F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M")
DEFAULT_N_CTX = 4096  # the models' own 32k-128k would reserve GBs of KV cache for a chat that needs little
_BATCH = 512

_ffi = None
_lib = None
_load_error: str | None = None
_log_lines: deque[str] = deque(maxlen=20)  # llama.cpp's last messages, for the error line when a load fails


def usable_cores() -> int:
    """The cores this process may run on: its affinity mask where the system has one (a container's cpuset, taskset,
    a test worker pinned to its core), not the machine's count, so llama.cpp's threads do not fight for fewer cores."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _runtime():
    """(ffi, lib) of the loaded libllama; UserError(RUNTIME_MISSING + the cause) when it cannot be loaded."""
    global _ffi, _lib, _load_error, _log_callback
    if _lib is not None:
        return _ffi, _lib
    if _load_error is None:
        try:
            from llama_cpp_py_sync._cffi_bindings import get_ffi, get_lib

            ffi, lib = get_ffi(), get_lib()
        except ImportError:
            _load_error = RUNTIME_MISSING
        except (OSError, RuntimeError) as exc:  # the wheel is there but its libllama does not load
            _load_error = _not_loading(str(exc))
        else:
            @ffi.callback("void(enum ggml_log_level, const char *, void *)")
            def _log_callback(level, text, user_data):  # keep llama.cpp quiet; remember its words for errors
                line = ffi.string(text).decode("utf-8", errors="replace").strip()
                if line:
                    _log_lines.append(line)

            lib.llama_log_set(_log_callback, ffi.NULL)
            lib.llama_backend_init()
            _ffi, _lib = ffi, lib
            return ffi, lib
    raise UserError(_load_error)


def _not_loading(error: str) -> str:
    """The one line for a runtime that is installed but whose libllama does not load, with the cause."""
    found = re.search(r"undefined symbol: \S+|version `GLIBC_[\d.]+' not found", error)
    cause = found.group(0) if found else error.strip().splitlines()[-1][:200]
    if "llama_cpp" in sys.modules:  # llama-cpp-python's older libggml, loaded first, shadows the runtime's symbols
        cause += "; llama-cpp-python (llama_cpp) is already loaded in this process: use one of the two per process"
    return (f"the llama.cpp runtime (llama-cpp-py-sync) is installed but does not load ({cause}), so K-quants, "
            "the GGUF check and chat cannot run. Run prepare_venv again; training, merging and the Q8_0 GGUF work "
            "without it.")


def require_runtime(step: str) -> None:
    """For a stage that needs llama.cpp: stop with the one RUNTIME_MISSING line (naming `step`) when it is missing."""
    try:
        _runtime()
    except UserError as exc:
        raise UserError(f"{step}: {exc}") from None


def runtime_available() -> bool:
    try:
        _runtime()
        return True
    except UserError:
        return False


def runtime_version() -> str:
    """'llama-cpp-py-sync 0.11739 (llama.cpp b11739, 0ce8cd114)'."""
    _runtime()
    import llama_cpp_py_sync as package

    return f"{PACKAGE} {package.__version__} (llama.cpp {package.__llama_cpp_tag__}, {package.__llama_cpp_commit__})"


def gpu_offload_supported() -> bool:
    """True when this libllama has a GPU device to put layers on (a CUDA/Metal/Vulkan build and a GPU).

    Not llama_supports_gpu_offload(): that says yes for the CPU wheel too, because its RPC backend counts."""
    _runtime()
    from llama_cpp_py_sync._cffi_bindings import get_backend_base_lib, get_backend_lib

    # The device list is in ggml (the registry), a device's type in ggml-base. On Linux either library finds both
    # (dlsym searches the dependencies too); on Windows GetProcAddress looks in the one DLL it is given.
    registry, base = get_backend_lib(), get_backend_base_lib()
    gpu_types = (base.GGML_BACKEND_DEVICE_TYPE_GPU, base.GGML_BACKEND_DEVICE_TYPE_IGPU)
    return any(base.ggml_backend_dev_type(registry.ggml_backend_dev_get(i)) in gpu_types
               for i in range(registry.ggml_backend_dev_count()))


def _last_error() -> str:
    """The cause in llama.cpp's own words: its "error loading model: ..." line, else its first error line."""
    lines = list(_log_lines)
    for line in lines:
        if "error loading model:" in line:
            return line.split("error loading model:", 1)[1].strip()
    errors = [line for line in lines if "error" in line.lower() or "failed" in line.lower()]
    return (errors or lines[-1:] or ["no message from llama.cpp"])[0]


def _metadata_only_gguf(path: Path, architecture: str) -> None:
    """A GGUF v3 file with no tensors and the one key general.architecture."""
    def text(value: str) -> bytes:
        data = value.encode()
        return struct.pack("<Q", len(data)) + data

    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + text("general.architecture")
                     + struct.pack("<I", 8) + text(architecture))


def supported_architectures(candidates: Iterable[str] | None = None) -> set[str]:
    """The GGUF architectures (general.architecture) this runtime can load, asked of libllama itself.

    llama.cpp has no call that lists them, so each candidate is tried on a tiny GGUF holding only that key:
    llama.cpp answers "unknown model architecture" for one it lacks and fails later (no vocabulary) for one it
    knows. candidates defaults to every architecture the installed `gguf` package names, plus Gemma's.
    """
    ffi, lib = _runtime()
    if candidates is None:
        candidates = {"gemma", "gemma2", "gemma3", "gemma3n", "gemma4", "gemma-embedding"}
        try:
            import gguf

            candidates |= set(gguf.MODEL_ARCH_NAMES.values())
        except ImportError:
            pass
    found = set()
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.gguf"
        params = lib.llama_model_default_params()
        params.vocab_only = True
        for name in sorted(set(candidates)):
            _metadata_only_gguf(probe, name)
            _log_lines.clear()
            model = lib.llama_model_load_from_file(str(probe).encode(), params)
            if model != ffi.NULL:
                lib.llama_model_free(model)
            if not any("unknown model architecture" in line for line in _log_lines):
                found.add(name)
    return found


class Model:
    """One loaded GGUF and (unless vocab_only) one context. Use open_model() to make one."""

    def __init__(self, path: Path, n_ctx: int | None, n_gpu_layers: int, vocab_only: bool):
        ffi, lib = self._ffi, self._lib = _runtime()
        self.path = Path(path)
        self._model = self._ctx = ffi.NULL
        if not self.path.is_file():
            raise UserError(f"GGUF file not found: {self.path}")
        params = lib.llama_model_default_params()
        params.n_gpu_layers = int(n_gpu_layers)
        params.vocab_only = bool(vocab_only)
        _log_lines.clear()
        self._model = lib.llama_model_load_from_file(str(self.path).encode("utf-8"), params)
        if self._model == ffi.NULL:
            raise UserError(f"llama.cpp could not load {self.path}: {_last_error()}. "
                            "Export the GGUF again (convert_to_gguf), or check that the file is complete.")
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        self.bos_id = int(lib.llama_vocab_bos(self._vocab))
        self.eos_id = int(lib.llama_vocab_eos(self._vocab))
        self.metadata = self._read_metadata()
        self.stop_token: int | None = None
        """The end-of-generation token that ended the last generate(), or None."""
        self.n_ctx = 0
        if not vocab_only:
            context = lib.llama_context_default_params()
            train = int(lib.llama_model_n_ctx_train(self._model)) or DEFAULT_N_CTX
            context.n_ctx = int(n_ctx) if n_ctx else min(train, DEFAULT_N_CTX)
            context.n_batch = context.n_ubatch = _BATCH
            context.n_threads = context.n_threads_batch = usable_cores()
            self._ctx = lib.llama_init_from_model(self._model, context)
            if self._ctx == ffi.NULL:
                self.close()
                raise UserError(f"llama.cpp could not make a context for {self.path}: {_last_error()}. "
                                "Try a smaller n_ctx, or fewer GPU layers.")
            self.n_ctx = int(lib.llama_n_ctx(self._ctx))

    def _read_metadata(self) -> dict[str, str]:
        ffi, lib = self._ffi, self._lib
        size = 1 << 16
        buffer = ffi.new("char[]", size)

        def read(call, index) -> str:
            nonlocal size, buffer
            n = call(self._model, index, buffer, size)
            if n >= size:  # a long value (the chat template, a token list): grow and read again
                size = n + 1
                buffer = ffi.new("char[]", size)
                n = call(self._model, index, buffer, size)
            return ffi.string(buffer, max(n, 0)).decode("utf-8", errors="replace")

        return {read(lib.llama_model_meta_key_by_index, i): read(lib.llama_model_meta_val_str_by_index, i)
                for i in range(lib.llama_model_meta_count(self._model))}

    def is_end_of_generation(self, token: int) -> bool:
        """True for the tokens the GGUF marks as ending a reply (llama.cpp's EOG set: for Gemma 3, <eos> 1 and
        <end_of_turn> 106; the set comes from the GGUF's tokenizer metadata, so Gemma-3n and Gemma 4 bring theirs)."""
        return bool(self._lib.llama_vocab_is_eog(self._vocab, int(token)))

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids of text, without BOS. special=True turns "<start_of_turn>" and the like into their ids."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = self._ffi.new("llama_token[]", capacity)
        n = self._lib.llama_tokenize(self._vocab, data, len(data), tokens, capacity, False, bool(special))
        if n < 0:
            capacity = -n
            tokens = self._ffi.new("llama_token[]", capacity)
            n = self._lib.llama_tokenize(self._vocab, data, len(data), tokens, capacity, False, bool(special))
        return list(tokens[0:n])

    def detokenize(self, ids: list[int], special: bool = True) -> str:
        """The text of ids; special=True writes special tokens as their text ("<end_of_turn>")."""
        ids = [int(i) for i in ids]
        if not ids:
            return ""
        tokens = self._ffi.new("llama_token[]", ids)
        capacity = 16 * len(ids) + 16
        for _ in range(2):
            text = self._ffi.new("char[]", capacity)
            n = self._lib.llama_detokenize(self._vocab, tokens, len(ids), text, capacity, False, bool(special))
            if n >= 0:
                return self._ffi.unpack(text, n).decode("utf-8", errors="replace")
            capacity = -n + 1
        raise RuntimeError("llama_detokenize kept asking for more room")

    def _need_context(self) -> None:
        if self._ctx == self._ffi.NULL:
            raise UserError(f"{self.path.name} was opened with vocab_only=True: open it again to run it.")

    def _decode(self, ids: list[int], start: int, all_logits: bool) -> np.ndarray | None:
        """Run ids at positions start.. in chunks; the logits of every position (all_logits) or of none."""
        lib, ffi = self._lib, self._ffi
        if start + len(ids) > self.n_ctx:
            raise UserError(f"{start + len(ids)} tokens do not fit the context of {self.n_ctx}: "
                            "open the model with a larger n_ctx.")
        rows = []
        for offset in range(0, len(ids), _BATCH):
            chunk = ids[offset:offset + _BATCH]
            batch = lib.llama_batch_init(len(chunk), 0, 1)
            try:
                batch.n_tokens = len(chunk)
                for i, token in enumerate(chunk):
                    batch.token[i] = int(token)
                    batch.pos[i] = start + offset + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = 1 if all_logits else 0
                if not all_logits and offset + len(chunk) == len(ids):
                    batch.logits[len(chunk) - 1] = 1  # the sampler reads the last position
                code = lib.llama_decode(self._ctx, batch)
                if code != 0:
                    raise UserError(f"llama.cpp could not run {self.path.name} (llama_decode returned {code}): "
                                    f"{_last_error()}")
                if all_logits:
                    pointer = lib.llama_get_logits(self._ctx)
                    buffer = ffi.buffer(pointer, len(chunk) * self.n_vocab * 4)
                    rows.append(np.frombuffer(buffer, dtype=np.float32).reshape(len(chunk), self.n_vocab).copy())
            finally:
                lib.llama_batch_free(batch)
        return np.concatenate(rows) if all_logits else None

    def _fresh_sequence(self) -> None:
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self._ctx), True)

    def logits(self, ids: list[int]) -> np.ndarray:
        """float32 [len(ids), n_vocab]: row i is the prediction after ids[:i+1]. A fresh sequence each call."""
        self._need_context()
        if not ids:
            return np.zeros((0, self.n_vocab), dtype=np.float32)
        self._fresh_sequence()
        return self._decode(list(ids), 0, all_logits=True)

    def generate(self, prompt_ids: list[int], max_tokens: int, temperature: float = 0.0, top_k: int = 1,
                 top_p: float = 1.0, repeat_penalty: float = 1.0, seed: int = 0) -> Iterator[int]:
        """Yield up to max_tokens new token ids after prompt_ids (a fresh sequence); stop before an
        end-of-generation token, which is then kept in .stop_token (None when max_tokens or the context ended the
        reply). temperature 0 or top_k 1 is greedy; otherwise top-k, top-p, temperature, seed."""
        self._need_context()
        self.stop_token = None
        if not prompt_ids:
            raise ValueError("generate needs at least one prompt token (start with model.bos_id)")
        lib = self._lib
        chain_params = lib.llama_sampler_chain_default_params()
        sampler = lib.llama_sampler_chain_init(chain_params)
        try:
            if repeat_penalty != 1.0:
                penalties = lib.llama_sampler_init_penalties(self.n_vocab, 64, float(repeat_penalty), 0.0, 0.0)
                lib.llama_sampler_chain_add(sampler, penalties)
            if temperature <= 0.0 or top_k == 1:
                lib.llama_sampler_chain_add(sampler, lib.llama_sampler_init_greedy())
            else:
                if top_k > 0:
                    lib.llama_sampler_chain_add(sampler, lib.llama_sampler_init_top_k(int(top_k)))
                if top_p < 1.0:
                    lib.llama_sampler_chain_add(sampler, lib.llama_sampler_init_top_p(float(top_p), 1))
                lib.llama_sampler_chain_add(sampler, lib.llama_sampler_init_temp(float(temperature)))
                lib.llama_sampler_chain_add(sampler, lib.llama_sampler_init_dist(int(seed) & 0xFFFFFFFF))
            self._fresh_sequence()
            prompt = [int(i) for i in prompt_ids]
            for token in prompt:
                lib.llama_sampler_accept(sampler, token)  # the repeat penalty sees the prompt too
            self._decode(prompt, 0, all_logits=False)
            position = len(prompt)
            for _ in range(max_tokens):
                token = int(lib.llama_sampler_sample(sampler, self._ctx, -1))  # also accepts it
                if self.is_end_of_generation(token):
                    self.stop_token = token
                    return
                yield token
                if position >= self.n_ctx:
                    return
                self._decode([token], position, all_logits=False)
                position += 1
        finally:
            lib.llama_sampler_free(sampler)

    def close(self) -> None:
        if self._ctx != self._ffi.NULL:
            self._lib.llama_free(self._ctx)
            self._ctx = self._ffi.NULL
        if self._model != self._ffi.NULL:
            self._lib.llama_model_free(self._model)
            self._model = self._ffi.NULL

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def open_model(path: Path | str, n_ctx: int | None = None, n_gpu_layers: int = 0, vocab_only: bool = False) -> Model:
    """Load a GGUF. n_ctx None: the model's training length, at most DEFAULT_N_CTX. n_gpu_layers -1: all layers
    (when gpu_offload_supported()). vocab_only: tokenizer and metadata only, no logits or generation."""
    return Model(Path(path), n_ctx, n_gpu_layers, vocab_only)


def _ggml_type(lib, name: str) -> int:
    try:
        return getattr(lib, f"GGML_TYPE_{name.upper()}")
    except AttributeError:
        raise UserError(f"unknown tensor type {name!r} (use e.g. Q8_0, Q6_K, Q4_K, F16)") from None


def quantize(src: Path, dst: Path, quant: str, tensor_types: dict[str, str] | None = None,
             imatrix: dict[str, np.ndarray] | None = None) -> None:
    """Write dst: src (a GGUF, F16/BF16/F32 or already quantized) at quant, one of QUANTS.

    tensor_types maps a tensor-name regex (searched anywhere in the name) to a ggml type for the tensors it
    matches, e.g. {"per_layer_token_embd": "Q8_0"}. imatrix maps a GGUF tensor name to its importance matrix,
    float32 [ne[0]] (ftg/imatrix.py). dst is written through a .partial file."""
    ffi, lib = _runtime()
    quant = quant.upper()
    if quant not in QUANTS:
        raise UserError(f"unknown quantization {quant!r}: use one of {', '.join(QUANTS)}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise UserError(f"GGUF file not found: {src}")
    params = lib.llama_model_quantize_default_params()
    params.ftype = getattr(lib, "LLAMA_FTYPE_MOSTLY_" + quant)
    params.nthread = usable_cores()
    params.allow_requantize = True
    keep = []  # the pattern strings and imatrix buffers must outlive the call
    if tensor_types:
        overrides = ffi.new("struct llama_model_tensor_override[]", len(tensor_types) + 1)  # NULL-terminated
        for i, (pattern, type_name) in enumerate(tensor_types.items()):
            keep.append(ffi.new("char[]", pattern.encode()))
            overrides[i].pattern = keep[-1]
            overrides[i].type = _ggml_type(lib, type_name)
        params.tt_overrides = overrides
    if imatrix:
        entries = ffi.new("struct llama_model_imatrix_data[]", len(imatrix) + 1)  # ended by a NULL name
        for i, (name, values) in enumerate(imatrix.items()):
            keep.append(ffi.new("char[]", name.encode()))
            keep.append(ffi.new("float[]", np.ascontiguousarray(values, dtype=np.float32).tolist()))
            entries[i].name, entries[i].data, entries[i].size = keep[-2], keep[-1], len(values)
        params.imatrix = entries
    partial = dst.with_name(dst.name + ".partial")
    _log_lines.clear()
    code = lib.llama_model_quantize(str(src).encode("utf-8"), str(partial).encode("utf-8"), ffi.new(
        "llama_model_quantize_params *", params))
    if code != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise UserError(f"llama.cpp could not quantize {src.name} to {quant}: {_last_error()}")
    os.replace(partial, dst)
