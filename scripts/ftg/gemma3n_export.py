"""Which Gemma-3n text models llama.cpp computes faithfully, and a check to run before exporting one.

Why (measured 2026-11-28: transformers 5.24 against llama.cpp from llama-cpp-python 0.3.36; the numbers and the
scripts are in .helpers/gemma3n-parity.md):
- llama.cpp's gemma3n graph (src/models/gemma3n.cpp) ignores most of the hyperparameters the converter writes and
  hard-codes the layout of the real E2B/E4B checkpoints: K/V computed in the first 20 layers only, the per-layer input
  width 256, laurel rank 64, 4 altup streams with stream 0 active, activation sparsity 0.95 on exactly the first 10
  layers, final logit softcap 30, tanh GELU. A model that differs converts and loads without complaint and then
  computes something else. `llama_cpp_layout_problems` lists every such difference; the real E2B and E4B have none.
- Where the layout matches, the graph is transformers' graph, op for op: fed the same layer inputs, every layer
  (sliding, full and KV-shared attention, laurel, altup predict/correct, per-layer inputs, softcap) agrees to about
  2e-6 relative in float32. What is left is numerical, and nothing at merge or convert time can change it:
  - activation sparsity: llama.cpp's `gaussian_topk` divides by n-1 for the standard deviation, transformers (like
    Google's JAX code) by n. The cutoff moves by about 0.82 * std / n_ff: 1e-4 std for E2B's n_ff 8192 (below bf16
    resolution), but 0.6 % of std for a test model with n_ff 128, enough to flip a random model's top-1 at a quarter
    of the positions. Hence the minimum width below.
  - GELU on the CPU goes through a float16 lookup table (about 1e-4 relative error), and the K/V cache is float16 by
    default: the same rounding every Gemma GGUF gets.
- Random weights at transformers' default init amplify any 1e-4 difference by about 1.5x per layer (the q/k RMS norms
  make attention sharp, the post-norms blow small sublayer outputs up to unit size), so a 22-layer random model
  disagrees at the f16 rounding level alone. A trained model, or a random one with small post-norm weights, does not.
"""

from __future__ import annotations

LLAMA_CPP_KV_LAYERS = 20
"""gemma3n.cpp: n_layer_kv_from_start = 20; later layers reuse layer 18 (sliding) or 19 (full) K/V."""

LLAMA_CPP_PER_LAYER_WIDTH = 256
"""llama-hparams.h: n_embd_altup = 256 (hidden_size_per_layer_input)."""

LLAMA_CPP_LAUREL_RANK = 64
"""llama-hparams.h: laurel_rank = 64."""

LLAMA_CPP_SPARSE_LAYERS = 10
"""gemma3n.cpp: n_layer_sparsity = 10, each with the 0.95 quantile cutoff (std multiplier 1.6448533)."""

LLAMA_CPP_SOFTCAP = 30.0
"""llama-hparams.h default; gemma3n never reads final_logit_softcapping from the GGUF."""

MIN_SPARSE_FFN_WIDTH = 2048
"""Below this, llama.cpp's n-1 standard deviation in the sparsity cutoff (see above) is larger than f16 rounding."""


def llama_cpp_layout_problems(config) -> list[str]:
    """Every way a Gemma-3n (text) config departs from what llama.cpp's gemma3n graph hard-codes; [] = exportable.

    `config` is a Gemma3nTextConfig or a Gemma3nConfig (its text part is checked).
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    problems = []
    n_layer = text.num_hidden_layers
    shared = text.num_kv_shared_layers
    if n_layer - shared != LLAMA_CPP_KV_LAYERS:
        problems.append(f"{n_layer} layers with {shared} KV-shared: llama.cpp computes K/V in exactly the first "
                        f"{LLAMA_CPP_KV_LAYERS} layers and shares them with the rest")
    types = list(text.layer_types)
    if shared and n_layer > LLAMA_CPP_KV_LAYERS and types[LLAMA_CPP_KV_LAYERS - 2:LLAMA_CPP_KV_LAYERS] != [
            "sliding_attention", "full_attention"]:
        problems.append(f"layers 18 and 19 are {types[18:20]}: llama.cpp's shared layers read the K/V of layer 18 "
                        "(sliding) and 19 (full)")
    if text.hidden_size_per_layer_input != LLAMA_CPP_PER_LAYER_WIDTH:
        problems.append(f"hidden_size_per_layer_input {text.hidden_size_per_layer_input}: llama.cpp assumes "
                        f"{LLAMA_CPP_PER_LAYER_WIDTH}")
    if text.laurel_rank != LLAMA_CPP_LAUREL_RANK:
        problems.append(f"laurel_rank {text.laurel_rank}: llama.cpp assumes {LLAMA_CPP_LAUREL_RANK}")
    if text.altup_num_inputs != 4 or text.altup_active_idx != 0 or not text.altup_correct_scale:
        problems.append("altup: llama.cpp assumes 4 inputs, active index 0 and the correct-output scale")
    expected = [0.95] * LLAMA_CPP_SPARSE_LAYERS + [0.0] * (n_layer - LLAMA_CPP_SPARSE_LAYERS)
    pattern = list(text.activation_sparsity_pattern)
    if len(pattern) != len(expected) or any(abs(a - b) > 1e-6 for a, b in zip(pattern, expected)):
        problems.append(f"activation_sparsity_pattern {pattern}: llama.cpp applies 0.95 to exactly the first "
                        f"{LLAMA_CPP_SPARSE_LAYERS} layers")
    widths = list(text.intermediate_size)
    if len(set(widths)) > 1:
        problems.append(f"intermediate_size differs between layers ({sorted(set(widths))}): llama.cpp's gemma3n "
                        "takes one FFN width for all layers and refuses the file")
    if min(widths) < MIN_SPARSE_FFN_WIDTH:
        problems.append(f"intermediate_size {min(widths)}: below {MIN_SPARSE_FFN_WIDTH}, llama.cpp's n-1 standard "
                        "deviation moves the activation-sparsity cutoff measurably")
    if text.final_logit_softcapping != LLAMA_CPP_SOFTCAP:
        problems.append(f"final_logit_softcapping {text.final_logit_softcapping}: llama.cpp always uses "
                        f"{LLAMA_CPP_SOFTCAP}")
    if text.hidden_activation != "gelu_pytorch_tanh":
        problems.append(f"hidden_activation {text.hidden_activation}: llama.cpp uses tanh GELU")
    if text.attention_bias:
        problems.append("attention_bias: llama.cpp's gemma3n loads no attention biases")
    return problems
