"""Causal-LM loss that never holds the full [tokens x vocabulary] logits (Gemma's vocabulary is 262k).

The model's own loss computes `lm_head(hidden)` for every token at once, softcaps it, upcasts it to float32 and keeps
it for the backward pass: 4096 tokens x 262,400 x (2 + 4 + 4) bytes = 10.7 GB on top of the model. Here only the
tokens that carry a label are projected, a chunk at a time, and each chunk's logits are recomputed in the backward
pass (torch.utils.checkpoint) instead of being kept, so the extra memory is one chunk's logits:
1024 tokens x 262,400 x ~16 bytes = 4.3 GB at most, freed before the next chunk.

The function applies `final_logit_softcapping` (Gemma-3n: 30.0) exactly as the model's forward does
(logits / cap -> tanh -> * cap), and reduces the way transformers' ForCausalLMLoss does (labels shifted left by one;
sum / num_items_in_batch when the Trainer passes it, else the mean over labelled tokens), so training computes the
same function as inference and the same loss as the plain path (tests/test_training_levers.py checks loss and gradients within 1e-5).

Two ways to get the gradient (issue 17):
- fused (the default): the gradient with respect to the hidden states is computed in the forward pass, chunk by
  chunk, while that chunk's logits exist (softmax - one-hot, times the softcap's derivative, @ lm_head.weight), and
  kept ([labelled tokens x hidden], a few MB); the backward only scales it. Two vocabulary-wide matmuls per
  labelled token instead of three, and no more memory than the recompute path (one chunk's logits at a time).
  liger-kernel's fused linear cross-entropy does the same in Triton, on CUDA only; this is plain torch. It also
  takes the lm_head that peft wraps when the turn tokens' rows are trained (ftg.models; issue 14): the frozen
  weight plus those few trained rows, never a copy of the whole matrix.
- recompute: each chunk under torch.utils.checkpoint, its logits recomputed in backward (the issue-7 version; a
  third 262k-wide matmul per labelled token). Kept to measure the fused path against (bench/peer_compare.py).

Use: `enable_chunked_loss(model)` on the model (PEFT-wrapped or not) before building the Trainer;
finetune_gemma.load_model_for_training does it unless train.loss_chunk_tokens is 0.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100

DEFAULT_CHUNK_TOKENS = 1024
"""Tokens projected to the vocabulary at once: 1024 x 262k x ~16 bytes (bf16 logits, softcap temporaries, fp32
log-softmax) ~ 4 GB transient. Smaller saves memory; below ~256 the lm_head matmuls get too small to be efficient."""


def _chunk_loss_sum(hidden: torch.Tensor, targets: torch.Tensor, lm_head: torch.nn.Module, softcap: float | None):
    logits = lm_head(hidden)
    if softcap is not None:  # exactly the model's forward: logits / cap -> tanh -> * cap, in the compute dtype
        logits = logits / softcap
        logits = torch.tanh(logits)
        logits = logits * softcap
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")


class FusedLinearCrossEntropy(torch.autograd.Function):
    """sum of cross_entropy(softcap(hidden @ W.T), targets); gradients computed in forward, chunk by chunk.

    hidden: [n, h] (labelled positions only), weight: [vocab, h], targets: [n] (no -100 left).
    W is `weight` with the rows `row_ids` replaced by `row_weight` ([k, h]) when row_ids is given: peft's trainable
    tokens on a tied lm_head. Their logits are recomputed from row_weight ([chunk x k], cheap) rather than building W,
    a copy of the whole 262k-row matrix, in every chunk.
    """

    @staticmethod
    def forward(ctx, hidden, weight, row_ids, row_weight, targets, softcap, chunk_tokens, need_hidden_grad,
                need_weight_grad, need_row_grad):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight_grad else None
        grad_rows = torch.zeros_like(row_weight, dtype=torch.float32) if need_row_grad else None
        if row_ids is not None:
            rows = row_weight.to(weight.dtype)
            row_shift = rows - weight.index_select(0, row_ids)  # grad @ W = grad @ weight + grad[:, rows] @ shift
        for start in range(0, targets.shape[0], chunk_tokens):
            h, t = hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens]
            logits = h @ weight.t()
            if row_ids is not None:
                logits[:, row_ids] = h @ rows.t()
            if softcap is not None:  # exactly the model's forward: logits / cap -> tanh -> * cap, in the compute dtype
                tanh = torch.tanh(logits / softcap)
                logits = tanh * softcap
            logits = logits.float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if grad_hidden is None and grad_weight is None and grad_rows is None:
                continue
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits (one [chunk x vocab] buffer)
            grad[torch.arange(t.shape[0], device=t.device), t] -= 1.0
            if softcap is not None:
                grad.mul_(1.0 - tanh.float().square())  # d(cap * tanh(x / cap)) / dx
            grad = grad.to(hidden.dtype)
            row_grad = None if row_ids is None else grad[:, row_ids]
            if grad_hidden is not None:
                grad_hidden[start:start + chunk_tokens] = grad @ weight
                if row_ids is not None:
                    grad_hidden[start:start + chunk_tokens] += row_grad @ row_shift
            if grad_weight is not None:
                grad_weight += (grad.t() @ h).float()
            if grad_rows is not None:
                grad_rows += (row_grad.t() @ h).float()
        if grad_weight is not None and row_ids is not None:
            grad_weight[row_ids] = 0.0  # those rows of `weight` are replaced, so they do not reach the loss
        ctx.weight_dtype, ctx.row_dtype = weight.dtype, None if row_weight is None else row_weight.dtype
        ctx.save_for_backward(grad_hidden, grad_weight, grad_rows)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight, grad_rows = ctx.saved_tensors
        hidden = None if grad_hidden is None else grad_hidden * grad_total.to(grad_hidden.dtype)
        weight = None if grad_weight is None else (grad_weight * grad_total).to(ctx.weight_dtype)
        rows = None if grad_rows is None else (grad_rows * grad_total).to(ctx.row_dtype)
        return hidden, weight, None, rows, None, None, None, None, None, None


def fused_head(lm_head: torch.nn.Module):
    """(weight, row_ids, row_weight) for the fused path, or None where it does not apply.

    It needs a plain bias-free Linear head (Gemma's tied, frozen lm_head under LoRA is one), or one that peft's
    trainable_token_indices wraps (TrainableTokensWrapper, one active adapter): the frozen weight, the trained rows'
    ids and their trained values. Anything else (several adapters, merged, disabled) goes through lm_head itself.
    """
    if type(lm_head) is torch.nn.Linear and lm_head.bias is None:
        return lm_head.weight, None, None
    tokens = getattr(lm_head, "token_adapter", None)  # peft.utils.other.TrainableTokensWrapper
    base = getattr(tokens, "base_layer", None)
    if type(base) is not torch.nn.Linear or base.bias is not None or tokens.merged or tokens.disable_adapters:
        return None
    if len(tokens.active_adapters) != 1:
        return None
    adapter = tokens.active_adapters[0]
    row_weight = tokens.trainable_tokens_delta[adapter]  # the rows' values, not a difference, despite the name
    row_ids = torch.tensor(tokens.token_indices[adapter], device=base.weight.device)
    return base.weight, row_ids, row_weight


def chunked_causal_lm_loss(
    hidden_states: torch.Tensor,
    lm_head: torch.nn.Module,
    labels: torch.Tensor | None,
    softcap: float | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    num_items_in_batch: torch.Tensor | int | None = None,
    shift_labels: torch.Tensor | None = None,
    fused: bool = True,
) -> torch.Tensor:
    """Cross-entropy of lm_head(hidden_states) against the next-token labels, computed chunk by chunk.

    hidden_states: [batch, seq, hidden], the decoder's final (normed) output.
    labels: [batch, seq] with -100 where no loss is taken; shifted here (token i predicts label i+1), unless
        shift_labels (already shifted) is given, as transformers' ForCausalLMLoss does.
    """
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
    targets = shift_labels.reshape(-1).to(hidden.device)
    # Unlabelled positions (user turns, headers, packing separators) add 0 to the sum and nothing to the gradient:
    # skip their 262k-wide projection entirely.
    keep = (targets != IGNORE_INDEX).nonzero().squeeze(1)
    hidden, targets = hidden.index_select(0, keep), targets.index_select(0, keep)
    head = fused_head(lm_head) if fused else None
    if head is not None:
        weight, row_ids, row_weight = head
        grad_on = torch.is_grad_enabled()
        total = FusedLinearCrossEntropy.apply(hidden, weight, row_ids, row_weight, targets, softcap, chunk_tokens,
                                              grad_on and hidden.requires_grad, grad_on and weight.requires_grad,
                                              grad_on and row_weight is not None and row_weight.requires_grad)
        return _reduce(total, targets, num_items_in_batch)
    total = hidden_states.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.shape[0], chunk_tokens):
        part = slice(start, start + chunk_tokens)
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss_sum, hidden[part], targets[part], lm_head, softcap,
                                       use_reentrant=False)
        else:
            total = total + _chunk_loss_sum(hidden[part], targets[part], lm_head, softcap)
    return _reduce(total, targets, num_items_in_batch)


def _reduce(total, targets, num_items_in_batch):
    if num_items_in_batch is None:
        return total / targets.shape[0]  # mean over labelled tokens (0/0 = nan when none, as F.cross_entropy gives)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def _forward_with_chunked_loss(self, input_ids=None, attention_mask=None, position_ids=None, labels=None,
                               logits_to_keep=0, **kwargs):
    """Replaces a *ForCausalLM's forward: the usual forward without labels; with labels, the loss only (no logits)."""
    if labels is None and kwargs.get("shift_labels") is None:
        return self._forward_without_chunked_loss(input_ids=input_ids, attention_mask=attention_mask,
                                                  position_ids=position_ids, logits_to_keep=logits_to_keep, **kwargs)
    from transformers.modeling_outputs import CausalLMOutputWithPast

    num_items_in_batch = kwargs.pop("num_items_in_batch", None)
    shift_labels = kwargs.pop("shift_labels", None)
    outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
    loss = chunked_causal_lm_loss(
        outputs.last_hidden_state,
        self.lm_head,
        labels,
        softcap=self.config.get_text_config().final_logit_softcapping,
        chunk_tokens=self._chunked_loss_tokens,
        num_items_in_batch=num_items_in_batch,
        shift_labels=shift_labels,
        fused=self._chunked_loss_fused,
    )
    return CausalLMOutputWithPast(loss=loss, logits=None)


def enable_chunked_loss(model, chunk_tokens: int = DEFAULT_CHUNK_TOKENS, fused: bool = True):
    """Make `model` (a Gemma *ForCausalLM, or a PEFT model around one) compute its training loss chunk by chunk.

    The instance's forward is replaced (the way liger-kernel patches models); calls without labels, such as
    generate(), run the original forward unchanged. fused=False: recompute each chunk's logits in backward instead
    of computing the gradient in forward. Returns the model.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(causal_lm, "lm_head") or not hasattr(causal_lm, "model"):
        raise TypeError(f"{type(causal_lm).__name__} has no .model/.lm_head: chunked loss does not apply")
    if not hasattr(causal_lm, "_forward_without_chunked_loss"):
        causal_lm._forward_without_chunked_loss = causal_lm.forward
    causal_lm._chunked_loss_tokens = chunk_tokens
    causal_lm._chunked_loss_fused = fused  # False: the recompute path (see the module docstring)
    causal_lm.forward = types.MethodType(_forward_with_chunked_loss, causal_lm)
    return model
