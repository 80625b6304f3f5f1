"""The llama.cpp runtime, behind one small interface: open a GGUF, tokenize, score, generate, quantize.

This is the only module that imports the runtime package (today llama-cpp-python). ftg.gguf_run and ftg.gguf_make
build on it, and the stages use those, so a different runtime changes this file alone.

    open_model(path, n_ctx, n_gpu_layers, vocab_only, logits_all) -> Model
    Model.metadata / n_ctx / n_vocab / bos_id / eos_id / is_end_of_generation(token)
    Model.tokenize(text) / detokenize(ids) / logits(ids) / generate(prompt_ids, ...) / close()
    quantize(src, dst, quant, log, tensor_types=None)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from ftg.errors import UserError

MISSING_RUNTIME = ("the llama.cpp runtime (llama-cpp-python) is not installed, so GGUF files cannot be quantized, "
                   "checked or chatted with. Run prepare_venv again and read its messages.")

FTYPES = {"F16": "LLAMA_FTYPE_MOSTLY_F16", "BF16": "LLAMA_FTYPE_MOSTLY_BF16", "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
          "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K", "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
          "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "Q3_K_M": "LLAMA_FTYPE_MOSTLY_Q3_K_M"}
"""Our quant names -> llama.cpp's file types."""


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise UserError(MISSING_RUNTIME) from None
    return llama_cpp


def require_runtime() -> None:
    """Stop with one line (MISSING_RUNTIME) when the runtime cannot be imported."""
    _llama_cpp()


def runtime_version() -> str:
    return _llama_cpp().__version__


def gpu_offload_supported() -> bool:
    return bool(_llama_cpp().llama_supports_gpu_offload())


@contextlib.contextmanager
def native_output_to(log: Path):
    """Send what llama.cpp's C code prints (a line per tensor while quantizing, load warnings) to a file."""
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


class Model:
    """An open GGUF. Token ids are plain ints; text is str."""

    def __init__(self, llm, logits_all: bool):
        self._llm = llm
        self._logits_all = logits_all
        self.metadata: dict[str, str] = dict(llm.metadata)
        self.n_ctx: int = llm.n_ctx()
        self.n_vocab: int = llm.n_vocab()
        self.bos_id: int = llm.token_bos()
        self.eos_id: int = llm.token_eos()
        self.stop_token: int | None = None
        """The end-of-generation token that ended the last generate(), or None."""

    def is_end_of_generation(self, token: int) -> bool:
        """True for the tokens that end a reply (<eos>, <end_of_turn>, ... as the GGUF marks them)."""
        return bool(_llama_cpp().llama_vocab_is_eog(self._llm._model.vocab, token))

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids of `text`; never adds <bos> (chat templates write it). special: parse <tags> as tokens."""
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def detokenize(self, ids: list[int], special: bool = True) -> str:
        return self._llm.detokenize(list(ids), special=special).decode("utf-8", errors="replace")

    def logits(self, ids: list[int]) -> np.ndarray:
        """Next-token logits after every position of `ids`, float32 [len(ids), n_vocab] (a fresh sequence)."""
        if not self._logits_all:
            raise ValueError("open the model with logits_all=True to read the logits of every position")
        self._llm.reset()
        self._llm.eval(list(ids))
        return np.asarray(self._llm.scores[: len(ids)], dtype=np.float32)

    def generate(self, prompt_ids: list[int], max_tokens: int, temperature: float = 0.0, top_k: int = 1,
                 top_p: float = 1.0, repeat_penalty: float = 1.0, seed: int = 0) -> Iterator[int]:
        """Reply tokens after `prompt_ids` (a fresh sequence), up to max_tokens; stops before an end-of-generation
        token, which is then kept in .stop_token (None when max_tokens ended the reply). temperature 0 is greedy."""
        self._llm.set_seed(seed)
        self.stop_token = None
        if max_tokens < 1:
            return
        count = 0
        for token in self._llm.generate(list(prompt_ids), temp=temperature, top_k=top_k if temperature else 1,
                                        top_p=top_p, repeat_penalty=repeat_penalty, reset=True):
            if self.is_end_of_generation(token):
                self.stop_token = token
                return
            yield token
            count += 1
            if count >= max_tokens:
                return

    def close(self) -> None:
        self._llm.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_model(path: Path, n_ctx: int | None = None, n_gpu_layers: int = 0, vocab_only: bool = False,
               logits_all: bool = False) -> Model:
    """Open a GGUF. n_ctx: context in tokens (None: 512); n_gpu_layers: -1 all, 0 none (where the runtime has a GPU).

    A missing file or one llama.cpp cannot load is a UserError.
    """
    llama_cpp = _llama_cpp()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist.")
    kwargs = dict(model_path=str(path), n_gpu_layers=n_gpu_layers, vocab_only=vocab_only, logits_all=logits_all,
                  verbose=False)
    if n_ctx:
        kwargs.update(n_ctx=n_ctx, n_batch=min(n_ctx, 2048))
    try:
        # A vocab-only load still makes a context, and llama.cpp then warns "n_ctx_train (0)": true of no real model.
        with native_output_to(Path(os.devnull)):
            llm = llama_cpp.Llama(**kwargs)
    except ValueError as exc:  # llama-cpp-python's way of saying the model or its context could not be made
        raise UserError(f"llama.cpp could not load {path} ({exc}). The file is damaged or is not a GGUF model: make "
                        "it again with convert_only, or lower chat.context_size if memory ran out.") from None
    return Model(llm, logits_all)


def quantize(src: Path, dst: Path, quant: str, log: Path, tensor_types: dict[str, str] | None = None) -> None:
    """Quantize the GGUF `src` into `dst` as `quant` (a key of FTYPES); llama.cpp's messages go to `log`.

    tensor_types: {regex on the GGUF tensor name: ggml type name such as "Q8_0"}, as llama-quantize --tensor-type
    takes it (e.g. per_layer_token_embd kept at Q8_0 for Ollama, which rejects K-quants of that table).
    """
    llama_cpp = _llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[quant])
    if tensor_types:
        # llama.cpp reads a C array of {pattern, type} ended by a NULL pattern (llama_model_quantize_params.tt_overrides).
        overrides = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()
        patterns = [pattern.encode("utf-8") for pattern in tensor_types]  # kept alive until the call returns
        for slot, pattern, type_name in zip(overrides, patterns, tensor_types.values()):
            slot.pattern = pattern
            slot.type = getattr(llama_cpp, f"GGML_TYPE_{type_name}")
        params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    with native_output_to(log):
        code = llama_cpp.llama_model_quantize(str(src).encode("utf-8"), str(dst).encode("utf-8"), ctypes.byref(params))
    if code != 0 or not Path(dst).exists():
        raise UserError(f"llama.cpp could not quantize {src} to {quant} (code {code}). Check the disk space; "
                        f"llama.cpp's messages are in {log}.")
