"""The importance matrix (scripts/ftg/imatrix.py, convert.build_imatrix / write_quant): computed by the tiny random
Gemma 3 on conversations, keyed by the F16 GGUF's own tensor names, and taken by llama.cpp's quantizer (the tensor
bytes change exactly where llama.cpp uses it)."""

from __future__ import annotations

import json
from math import prod

import numpy as np
import pytest

import convert
from ftg import llama_runtime as rt
from ftg.config import load_config
from ftg.errors import UserError
from ftg.gguf_make import gguf_header

CONVERSATIONS = [
    [{"role": "user", "content": f"Сколько узлов до порта номер {i}?"},
     {"role": "assistant", "content": f"Идём {i * 3} узлов, ветер попутный, капитан"}]
    for i in range(12)
]
LINEAR = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def tensor_bytes(path) -> dict[str, tuple[str, bytes]]:
    """{tensor name: (ggml type, its data bytes)} of a GGUF file."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    data = path.read_bytes()
    found = {}
    for name, (kind, shape, offset) in gguf_header(path)[1].items():
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[kind]]
        found[name] = (kind, data[offset:offset + prod(shape) // block * size])
    return found


def test_imatrix_is_mapped_and_reaches_the_quantizer(tiny_gemma3_dir, tiny_gguf, tmp_path, tokenizer_of):
    train = tmp_path / "train_dataset.jsonl"
    train.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in CONVERSATIONS),
                     encoding="utf-8")
    cfg = load_config(overrides={"paths": {"data_dir": str(tmp_path)}, "export": {"imatrix_tokens": 300}})
    tokenizer = tokenizer_of(tiny_gemma3_dir)
    assert convert.build_imatrix(cfg, tiny_gemma3_dir, tokenizer, tiny_gguf, ["Q8_0", "F16"]) is None  # no K-quant
    found = convert.build_imatrix(cfg, tiny_gemma3_dir, tokenizer, tiny_gguf, ["Q4_K_M", "Q8_0"])
    shapes = {name: shape for name, (_, shape, _) in gguf_header(tiny_gguf)[1].items()}
    assert sorted(found.data) == sorted(f"blk.{b}.{n}.weight" for b in range(2) for n in LINEAR)
    assert found.skipped == [] and found.tokens == 300 and 1 < found.conversations < len(CONVERSATIONS)
    for name, values in found.data.items():  # one mean square per input column (ne[0]): 64, or 128 for ffn_down
        assert values.dtype == np.float32 and values.shape == (shapes[name][0],) and (values > 0).all()

    plain, ones = tmp_path / "plain.gguf", tmp_path / "ones.gguf"
    rt.quantize(tiny_gguf, plain, "Q4_K_M")
    rt.quantize(tiny_gguf, ones, "Q4_K_M", imatrix={n: np.ones_like(v) for n, v in found.data.items()})
    mine, used = convert.write_quant(tiny_gguf, tmp_path, "Q4_K_M", {}, found)  # what the ladder writes
    assert used and convert.write_quant(tiny_gguf, tmp_path, "Q8_0", {}, found)[1] is False
    plain, ones, mine = map(tensor_bytes, (plain, ones, mine))
    weighted = {n for n, (kind, _) in plain.items() if n in found.data and kind != "Q8_0"}  # Q8_0 ignores it
    assert len(weighted) >= 8  # the tiny's 64-wide rows are Q5_0 in a Q4_K_M file: weighted rounding too
    for name in plain:
        assert plain[name][0] == mine[name][0] == ones[name][0]  # the same types: only the rounding moves
        assert (mine[name] != plain[name]) == (name in weighted), name
        assert (mine[name] != ones[name]) == (name in weighted), name

    # A wrong-sized entry stops llama.cpp (its size check): it reads the array we pass.
    with pytest.raises(UserError, match="imatrix size 3"):
        rt.quantize(tiny_gguf, tmp_path / "bad.gguf", "Q4_K_M", imatrix={"blk.0.attn_q.weight": np.ones(3)})
