"""The importance matrix (imatrix) of the K-quants, computed from your own training conversations.

A K-quant rounds each block of weights to a few levels. Without an imatrix llama.cpp weighs every weight's rounding
error by the weight alone; with one it weighs the error of input column j by how large the activations entering
column j are on real text, so the columns your conversations use most are rounded most carefully (llama.cpp's
llama-imatrix tool; Unsloth's dynamic quants use the same idea with their own calibration text).

What llama.cpp's quantizer takes (src/llama-quant.cpp: llama_model_quantize_params.imatrix, an array of
{name, data, size} ended by a NULL name; tools/quantize/quantize.cpp builds it from llama-imatrix's file):
- name: the GGUF tensor name, e.g. blk.0.attn_q.weight;
- data: for each input column j of the weight (ne[0] of the GGUF tensor) the mean over the calibration tokens of
  x_j squared, x being the activation the matmul multiplies by that weight; size = ne[0] (ne[0] * n_experts for
  mixture-of-experts tensors, which Gemma does not have);
- a tensor with no entry is quantized without one (llama.cpp logs "did not find weights"); an entry whose size is
  not ne[0] * ne[2] stops the quantization; only the IQ1/IQ2 types (and Q2_K_S) require one; Q8_0 ignores it.
llama-imatrix collects the blk.* matmuls only (the output/token_embd table, tied in Gemma, gets none), and so do we.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONVERSATION_TOKENS = 1024
"""At most this many tokens of one conversation per forward pass (a long chat is cut, the next one starts)."""


def uses_imatrix(quant: str) -> bool:
    """The K-quants (Q3_K_M .. Q6_K) are made with the imatrix; Q8_0 ignores one, F16/BF16 are not quantized."""
    return "_K" in quant.upper()


@dataclass
class Imatrix:
    """The imatrix of one merged model, ready for llama_runtime.quantize(..., imatrix=data)."""

    data: dict[str, np.ndarray]
    """GGUF tensor name -> float32 [ne[0]]: the mean squared activation entering each input column."""
    tokens: int
    """Calibration tokens the means are over."""
    conversations: int
    skipped: list[str]
    """Linear layers of the language model with no GGUF tensor of their shape (named, not mapped)."""
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"tensors": len(self.data), "tokens": self.tokens, "conversations": self.conversations,
                "skipped": self.skipped, "seconds": round(self.seconds, 1)}


def calibration_ids(tokenizer, conversations: list[list[dict]], max_tokens: int) -> list[list[int]]:
    """Token ids of the conversations rendered with the chat template, max_tokens in all."""
    from ftg.training_data import render_ids

    sequences, left = [], max_tokens
    for messages in conversations:
        if left <= 0:
            break
        try:
            ids = render_ids(tokenizer, messages)[: min(left, CONVERSATION_TOKENS)]
        except Exception as exc:  # a conversation the template rejects is skipped, said
            print(f"  imatrix: skipped a conversation the chat template rejects: {exc}")
            continue
        sequences.append(ids)
        left -= len(ids)
    return sequences


def gguf_name(module_name: str, name_map) -> str | None:
    """The GGUF weight name of a linear layer of the text model (model.layers.3.mlp.down_proj -> blk.3.ffn_down.weight),
    or None outside the blocks."""
    name = name_map.get_name(module_name)
    return f"{name}.weight" if name and name.startswith("blk.") else None


# long: load, hook every linear layer of the blocks, run the conversations, map and check each name
def compute(merged: Path, tokenizer, full_gguf: Path, train_file: Path, max_tokens: int) -> Imatrix:
    """The imatrix of the merged model over up to max_tokens tokens of train_file's conversations, keyed by the
    names of full_gguf's tensors (each checked to exist there with ne[0] = the layer's input width)."""
    import gguf
    import torch

    from ftg.errors import UserError
    from ftg.gguf_check import reference_placement
    from ftg.gguf_make import count_parameters, gguf_header
    from ftg.models import load_causal_lm
    from ftg.training_data import DataStats, read_conversations

    started = time.time()
    architecture, tensors = gguf_header(full_gguf)
    arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == architecture), None)
    if arch is None:
        raise UserError(f"{full_gguf.name}: gguf-py does not know the architecture {architecture!r}.")
    conversations = read_conversations(train_file, DataStats())
    sequences = calibration_ids(tokenizer, conversations, max_tokens)
    device, dtype = reference_placement(count_parameters(merged))
    model = load_causal_lm(merged, dtype=dtype).to(device).eval()
    n_blocks = len(model.model.layers)
    name_map = gguf.get_tensor_name_map(arch, n_blocks)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    skipped, hooks = [], []
    for module_name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        name = gguf_name(module_name, name_map)
        if name is None:
            continue  # the lm_head (Gemma ties it to token_embd) and other layers outside the blocks
        if name not in tensors or tensors[name][1][0] != module.in_features:
            skipped.append(module_name)
            continue

        def accumulate(module, inputs, name=name):
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            sums[name] = sums.get(name, 0) + x.pow(2).sum(dim=0)
            counts[name] = counts.get(name, 0) + x.shape[0]

        hooks.append(module.register_forward_pre_hook(accumulate))
    try:
        with torch.no_grad():
            for ids in sequences:  # the decoder alone: no lm_head (262,144 logits a token, 60 % of the 270M's work)
                model.model(input_ids=torch.tensor([ids], device=device))
    finally:
        for hook in hooks:
            hook.remove()
    del model
    data = {name: (sums[name] / counts[name]).cpu().numpy().astype(np.float32) for name in sums}
    return Imatrix(data, sum(map(len, sequences)), len(sequences), skipped, time.time() - started)
