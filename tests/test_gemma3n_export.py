"""Gemma-3n: a model at llama.cpp's layout converts to an f16 GGUF whose next-token choices match transformers'.

The model is random, at the real E2B/E4B layout that llama.cpp hard-codes (20 K/V layers + shared ones, per-layer
width 256, laurel 64, sparsity on the first 10 layers, E2B's FFN width 8192), made tiny where llama.cpp allows:
hidden size 64, 2 heads of 32, 2 shared layers. Two choices keep it honest and light:
- Post-norm weights are 0.1 instead of 1 and the altup output scale is 1 instead of 0 (hub_layouts.condition_gemma3n).
  A random Gemma-3n at transformers' default init amplifies rounding by about 1.5x per layer, so 22 layers turn f16
  rounding alone into 83 % agreement; small post-norms keep it as well-conditioned as a trained model. The default
  zero output scale would switch the per-layer-input path off.
- The per-layer embedding (262144 x 22 x 256) is the heavy part. transformers keeps only its first 16384 rows (ids
  beyond them read row 0, the zero padding row); the folder handed to the converter holds the full table in f16
  with zeros beyond row 16384. Both sides therefore compute the same function: 369 MB in transformers, 3 GB on disk.
Measured 2026-11-28 on 2 busy cores (load 10): 2 minutes; peak memory 4.5 GB (this process), 3.4 GB (the converter);
6 GB of temporary files, deleted as soon as they are used.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ftg.gemma3n_export import llama_cpp_layout_problems
from ftg.paths import CONVERTER_SCRIPT

from hub_layouts import (GEMMA3N_FAITHFUL_HIDDEN as HIDDEN, GEMMA3N_FAITHFUL_LAYERS as N_LAYERS,
                         GEMMA3N_FAITHFUL_SHARED as N_SHARED, condition_gemma3n, faithful_gemma3n_config)

pytestmark = pytest.mark.slow  # a Gemma-3n at llama.cpp's layout, converted and compared (about 45 s)

PER_LAYER_ROWS = 16384
TEXTS = [
    "The quick brown fox jumps over the lazy dog, and then it sleeps in the warm afternoon sun.",
    "Привет! Как дела? Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "Emoji 😀🎉 and numbers 12345, then a short story: once upon a time there was a small model.",
]


def build_model():
    from transformers import Gemma3nForCausalLM

    torch.manual_seed(0)
    model = Gemma3nForCausalLM(faithful_gemma3n_config(PER_LAYER_ROWS)).eval()
    condition_gemma3n(model)
    with torch.no_grad():
        model.model.embed_tokens_per_layer.weight[0] = 0  # ids >= PER_LAYER_ROWS read this row in transformers
    return model


def write_for_converter(model, folder: Path, tokenizer_dir: Path) -> None:
    """The model as a merged folder: full-size f16 per-layer table, zero K/V in the shared layers (as merge does)."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    small = state.pop("model.embed_tokens_per_layer.weight")
    table = torch.zeros((262144, small.shape[1]), dtype=torch.float16)
    table[:PER_LAYER_ROWS] = small.half()
    state["model.embed_tokens_per_layer.weight"] = table
    config = model.config
    for index in range(N_LAYERS - N_SHARED, N_LAYERS):
        prefix = f"model.layers.{index}.self_attn."
        state[prefix + "k_proj.weight"] = torch.zeros(config.num_key_value_heads * config.head_dim, HIDDEN)
        state[prefix + "v_proj.weight"] = torch.zeros(config.num_key_value_heads * config.head_dim, HIDDEN)
        state[prefix + "k_norm.weight"] = torch.zeros(config.head_dim)
    folder.mkdir(parents=True)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    del state, table
    full = faithful_gemma3n_config()
    full.architectures = ["Gemma3nForCausalLM"]
    full.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)


def llama_top1(gguf: Path, ids_list) -> list[int]:
    """llama.cpp's next-token choice at every position, loaded as LM Studio would (default f16 K/V cache)."""
    from ftg.llama_runtime import open_model

    with open_model(gguf, n_ctx=256) as model:
        return [int(t) for ids in ids_list for t in model.logits(ids).argmax(-1)]


def hf_top1(model, ids_list) -> list[int]:
    with torch.no_grad():
        return [t for ids in ids_list for t in model(torch.tensor([ids])).logits[0].argmax(-1).tolist()]


def agreement(a: list[int], b: list[int]) -> float:
    assert len(a) == len(b) > 100
    return sum(x == y for x, y in zip(a, b)) / len(a)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, demo_model_dir):
    from transformers import AutoTokenizer

    model = build_model()
    folder = tmp_path_factory.mktemp("gemma3n") / "merged"
    write_for_converter(model, folder, demo_model_dir)
    gguf = folder.parent / "model-f16.gguf"
    subprocess.run([sys.executable, str(CONVERTER_SCRIPT), str(folder), "--outfile", str(gguf), "--outtype", "f16"],
                   check=True, capture_output=True)
    (folder / "model.safetensors").unlink()  # 3 GB; the in-memory model is the reference from here on
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    ids_list = [tokenizer(text)["input_ids"] for text in TEXTS]
    assert all(any(0 < i < PER_LAYER_ROWS for i in ids) for ids in ids_list)  # the per-layer rows are in use
    choices = llama_top1(gguf, ids_list)
    gguf.unlink()  # 3 GB
    return model, ids_list, choices


def test_f16_gguf_agrees_with_transformers(exported):
    model, ids_list, llama = exported
    assert llama_cpp_layout_problems(model.config) == []
    score = agreement(hf_top1(model, ids_list), llama)
    print(f"top-1 agreement {score:.4f} over {len(llama)} positions")
    assert score >= 0.99


def test_one_layer_off_layout_is_caught(exported):
    """The same GGUF against a transformers model that differs in one place: layer 0 without activation sparsity.

    This is what llama.cpp's hard-coded layout does to a model whose config says otherwise; the agreement check
    must see it, and the layout check must name it.
    """
    model, ids_list, llama = exported
    model.model.layers[0].mlp.activation_sparsity = 0.0
    model.config.activation_sparsity_pattern = [0.0] + [0.95] * 9 + [0.0] * (N_LAYERS - 10)
    try:
        score = agreement(hf_top1(model, ids_list), llama)
        problems = llama_cpp_layout_problems(model.config)
    finally:
        model.model.layers[0].mlp.activation_sparsity = 0.95
        model.config.activation_sparsity_pattern = [0.95] * 10 + [0.0] * (N_LAYERS - 10)
    print(f"top-1 agreement with layer 0 dense: {score:.4f}")
    assert score < 0.95
    assert any("activation_sparsity_pattern" in p for p in problems)


def test_real_layouts_pass_and_tiny_ones_are_named():
    from transformers import Gemma3nTextConfig

    e4b = Gemma3nTextConfig()  # transformers' defaults are E4B: 35 layers, 15 shared, FFN 16384
    e2b = Gemma3nTextConfig(intermediate_size=8192, num_hidden_layers=30, num_kv_shared_layers=10,
                            activation_sparsity_pattern=[0.95] * 10 + [0.0] * 20)
    assert llama_cpp_layout_problems(e4b) == []
    assert llama_cpp_layout_problems(e2b) == []
    four_layers = Gemma3nTextConfig(num_hidden_layers=4, num_kv_shared_layers=2, hidden_size_per_layer_input=8,
                                    laurel_rank=8, intermediate_size=128, activation_sparsity_pattern=[0.95, 0.0, 0.0, 0.0],
                                    layer_types=["sliding_attention", "full_attention"] * 2)
    problems = "\n".join(llama_cpp_layout_problems(four_layers))
    for words in ("KV-shared", "hidden_size_per_layer_input 8", "laurel_rank 8", "activation_sparsity_pattern",
                  "intermediate_size 128"):
        assert words in problems
