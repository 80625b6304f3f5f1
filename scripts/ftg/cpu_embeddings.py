"""Keep Gemma-3n's per-layer embedding table in CPU memory instead of on the GPU.

Gemma-3n's `embed_tokens_per_layer` is a lookup table of 262,144 x (layers x 256): 2.0 B parameters for E2B and
2.3 B for E4B, i.e. 4.0 / 4.7 GB in bf16, a third or more of what a 4-bit E4B fine-tune holds on the GPU. It is
frozen and only ever indexed, so it can live in CPU RAM: each forward looks up the rows of the batch's tokens on the
CPU and copies just those to the GPU (4096 tokens x 35 x 256 x 2 bytes = 73 MB per micro-batch for E4B). This is
what Google's "PLE caching" does on phones.

Use: `keep_per_layer_embeddings_on_cpu(model)` after loading (PEFT-wrapped or not). finetune_gemma does it when its
device plan says so (train.per_layer_embeddings_on_cpu: auto = when the card is too small otherwise);
bench/train_throughput.py measures the difference (ours_ple_on_gpu / ours_ple_on_cpu).
"""

from __future__ import annotations

import torch


def _lookup_on_cpu(module, args):
    (input_ids,) = args
    module._output_device = input_ids.device
    return (input_ids.to(module.weight.device),)


def _back_to_input_device(module, args, output):
    return output.to(module._output_device, non_blocking=True)


def keep_per_layer_embeddings_on_cpu(model) -> int:
    """Move every Gemma-3n per-layer embedding of `model` to the CPU; returns the bytes taken off the GPU (0 if none).

    The module keeps its name and weights (checkpoints and merges are unaffected); two hooks move the token ids to
    the CPU before the lookup and the result back to the ids' device after it.
    """
    moved = 0
    for module in model.modules():
        embedding = getattr(module, "embed_tokens_per_layer", None)
        if embedding is None or getattr(embedding, "_ftg_on_cpu", False):
            continue
        if embedding.weight.device.type != "cpu":
            moved += embedding.weight.numel() * embedding.weight.element_size()
        embedding.to("cpu")
        embedding.register_forward_pre_hook(_lookup_on_cpu)
        embedding.register_forward_hook(_back_to_input_device)
        embedding._ftg_on_cpu = True
    if moved and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return moved
