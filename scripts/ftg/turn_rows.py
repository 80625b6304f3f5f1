"""Look up the trained turn-token rows only where those tokens occur, instead of copying the whole embedding.

finetune_gemma trains the turn tokens' embedding rows (peft's trainable_token_indices, ftg.models). peft's own
forward builds a full copy of the embedding with the trained rows written in (`weight.index_copy`) on every forward,
and its backward produces a dense gradient of that copy: on the 262,144 x 640 float32 table of Gemma 3 270M that is
two 0.67 GB tensors per micro-batch, for three trained rows. Measured on the 270M (2-core CPU, 16 conversations per
step, bench/peer_compare.py, dev_log 2026-12-02): peft's lookup 6.87 s/step and 3.06 GiB peak RSS, this one 5.37
s/step and 2.70 GiB, with the same losses.

Here the frozen embedding looks up every token as usual and the trained rows replace the result only at the
positions whose token is one of them; their gradient is just those positions' gradient. The values, and so the
loss and every gradient, are the same as peft's (tests/test_training_levers.py checks it). The lm_head side of the
tied rows is ftg.chunked_loss.fused_head's; merging (merge_lora) is peft's own and is untouched.

Use: `look_up_turn_rows_sparsely(model)` on the peft-wrapped model; returns how many embeddings it changed.
"""

from __future__ import annotations

import types

import torch


def _sparse_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """TrainableTokensLayer.forward for an embedding with one active, unmerged adapter; anything else is peft's."""
    active = self.active_adapters
    if self.disable_adapters or self.merged or len(active) != 1:
        return type(self).forward(self, x, *args, **kwargs)
    adapter = active[0]
    result = self.base_layer(x, *args, **kwargs)  # the frozen table, with Gemma's sqrt(hidden) scale applied
    index = torch.as_tensor(self.token_indices[adapter], device=x.device)
    positions, which = (x.reshape(-1, 1) == index).nonzero(as_tuple=True)
    if positions.numel() == 0:
        return result
    rows = self.trainable_tokens_delta[adapter].to(result.dtype).index_select(0, which)
    embed_scale = self._get_embed_scale()
    if embed_scale is not None:  # the same scaling peft applies after its own lookup
        rows = rows * embed_scale.to(rows.dtype)
    flat = result.reshape(-1, result.shape[-1]).index_put((positions,), rows)  # out of place: autograd sees it
    return flat.reshape(result.shape)


def look_up_turn_rows_sparsely(model: torch.nn.Module) -> int:
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    changed = 0
    for module in model.modules():
        if isinstance(module, TrainableTokensLayer) and isinstance(module.base_layer, torch.nn.Embedding):
            module.forward = types.MethodType(_sparse_forward, module)
            changed += 1
    return changed
