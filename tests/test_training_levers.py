"""Speed/memory levers of issue 7, checked for correctness on a tiny Gemma-3n (their effect is measured by bench/).

- ftg.chunked_loss: the same loss and gradients as the model's own loss, softcap included, on both of its paths
  (fused: gradient computed in forward; recompute: logits recomputed in backward), with lm_head trained, frozen, or frozen but for
  the turn tokens' rows (peft's trainable_token_indices, as finetune_gemma trains).
- ftg.cpu_embeddings: the per-layer embedding table moved to the CPU gives the same logits and gradients.
"""

from __future__ import annotations

import pytest
import torch

from conftest import requires_gpu, tiny_gemma3n_config
from ftg.chunked_loss import chunked_causal_lm_loss, enable_chunked_loss
from ftg.cpu_embeddings import keep_per_layer_embeddings_on_cpu
from ftg.turn_rows import look_up_turn_rows_sparsely


def _tiny_gemma3n():
    from transformers import Gemma3nForCausalLM

    torch.manual_seed(0)
    # float64, so that the comparison checks the arithmetic and not float32 summation order (in float32 the
    # gradients agree to ~2e-5 of their largest element; the losses are identical).
    model = Gemma3nForCausalLM(tiny_gemma3n_config()).to(torch.float64)
    # Random init gives logits of ~0.1, where tanh softcapping is the identity. Scale the (tied) embedding so the
    # raw logits reach ~+-100 and the softcap at 30 really bends them: a loss that skipped it would differ.
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(133.0)
    model.config.use_cache = False
    return model


def _packed_batch():
    """Two conversations packed in one row the way DataCollatorWithFlattening does (labels -100 at each start)."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 262144, (1, 37), generator=generator)
    labels = input_ids.clone()
    labels[0, :5] = -100  # a user turn
    labels[0, 20:26] = -100  # the second conversation's start and its user turn
    position_ids = torch.cat([torch.arange(20), torch.arange(17)]).unsqueeze(0)
    return input_ids, labels, position_ids


def _loss_and_grads(model, input_ids, labels, position_ids, **kwargs):
    model.zero_grad()
    loss = model(input_ids=input_ids, labels=labels, position_ids=position_ids, **kwargs).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _train_turn_tokens(model, input_ids, labels):
    """peft's trainable_token_indices, as finetune_gemma uses them: three rows of the tied embedding / lm_head, two
    of them among the batch's tokens and labels; their values moved off the base rows, so that a loss that read the
    base rows instead would differ."""
    from peft import LoraConfig, get_peft_model

    rows = [int(input_ids[0, 7]), int(labels[0, 30]), 5]
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], trainable_token_indices=rows))
    delta = model.get_base_model().model.embed_tokens.token_adapter.trainable_tokens_delta["default"]
    with torch.no_grad():
        delta.add_(torch.randn(delta.shape, generator=torch.Generator().manual_seed(2), dtype=delta.dtype) * 10)
    return model


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "recompute"])
@pytest.mark.parametrize("head", ["head_trained", "head_frozen", "turn_tokens"])
# The fast loop runs every head and loss path once; the num_items=23 half (the Trainer's token count) is slow-marked.
@pytest.mark.parametrize("num_items", [None, pytest.param(23, marks=pytest.mark.slow)])
def test_chunked_loss_matches_model_loss_and_gradients(num_items, head, fused):
    input_ids, labels, position_ids = _packed_batch()
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    model = _tiny_gemma3n()
    assert model.config.final_logit_softcapping == 30.0
    if head == "head_frozen":  # as under LoRA: the tied embedding / lm_head gets no gradient, only the hidden states do
        model.lm_head.weight.requires_grad_(False)
    if head == "turn_tokens":  # as finetune_gemma trains: LoRA, plus the turn tokens' rows of the tied embedding
        model = _train_turn_tokens(model, input_ids, labels)
    with torch.no_grad():
        logits = model(input_ids=input_ids, position_ids=position_ids).logits
    assert logits.abs().max() > 25, "the softcap must be exercised (logits near +-30)"

    plain_loss, plain_grads = _loss_and_grads(model, input_ids, labels, position_ids, **kwargs)
    enable_chunked_loss(model, chunk_tokens=7, fused=fused)  # 24 labelled tokens -> 4 chunks, the last one partial
    if head == "turn_tokens":  # and the embedding takes the trained rows only where they occur, as finetune_gemma's
        assert look_up_turn_rows_sparsely(model) == 1
    chunked_loss, chunked_grads = _loss_and_grads(model, input_ids, labels, position_ids, **kwargs)

    assert torch.isfinite(plain_loss)
    torch.testing.assert_close(chunked_loss, plain_loss, rtol=1e-5, atol=1e-5)
    assert plain_grads.keys() == chunked_grads.keys()
    assert len(plain_grads) > (3 if head == "turn_tokens" else 10)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-5, atol=1e-5, msg=name)
    if head == "turn_tokens":
        assert any("trainable_tokens_delta" in name and grad.abs().max() > 0 for name, grad in plain_grads.items())

    # Without labels the model still returns its logits (generate() and the sample replies rely on this).
    with torch.no_grad():
        assert torch.equal(model(input_ids=input_ids, position_ids=position_ids).logits, logits)


def test_chunked_loss_needs_the_softcap():
    """Guard against a test that could not fail: leaving the softcap out changes the loss noticeably."""
    input_ids, labels, position_ids = _packed_batch()
    model = _tiny_gemma3n()
    with torch.no_grad():
        hidden = model.model(input_ids=input_ids, position_ids=position_ids).last_hidden_state
        reference = model(input_ids=input_ids, labels=labels, position_ids=position_ids).loss
        capped = chunked_causal_lm_loss(hidden, model.lm_head, labels, softcap=30.0, chunk_tokens=5)
        uncapped = chunked_causal_lm_loss(hidden, model.lm_head, labels, softcap=None, chunk_tokens=5)
    torch.testing.assert_close(capped, reference, rtol=1e-5, atol=1e-5)
    assert (uncapped - reference).abs() > 0.1


def _per_layer_embedding_round_trip(device: str):
    input_ids, labels, position_ids = _packed_batch()
    model = _tiny_gemma3n().to(device)
    input_ids, labels, position_ids = input_ids.to(device), labels.to(device), position_ids.to(device)
    plain_loss, plain_grads = _loss_and_grads(model, input_ids, labels, position_ids)
    moved = keep_per_layer_embeddings_on_cpu(model)
    assert model.model.embed_tokens_per_layer.weight.device.type == "cpu"
    assert moved == (0 if device == "cpu" else model.model.embed_tokens_per_layer.weight.numel() * 8)
    lean_loss, lean_grads = _loss_and_grads(model, input_ids, labels, position_ids)
    torch.testing.assert_close(lean_loss, plain_loss, rtol=1e-12, atol=1e-12)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(lean_grads[name].to(device), grad, rtol=1e-12, atol=1e-12, msg=name)
    assert "model.embed_tokens_per_layer.weight" in model.state_dict()  # names unchanged: checkpoints still load


def test_per_layer_embeddings_on_cpu_compute_the_same():
    _per_layer_embedding_round_trip("cpu")


@requires_gpu
def test_per_layer_embeddings_on_cpu_leave_the_gpu():
    _per_layer_embedding_round_trip("cuda")


def test_plan_says_what_it_traded():
    """Plenty of memory: the fastest setting and no notes. Less: the plan says what it gave up, and why."""
    from conftest import tiny_gemma3_config
    from ftg.config import TrainConfig
    from ftg.device_plan import plan_device

    config = tiny_gemma3_config()  # 262k vocabulary: one 1024-token chunk of logits is ~4 GiB
    roomy = plan_device(config, 64 * 1024**3, TrainConfig())
    assert not roomy.gradient_checkpointing and roomy.micro_batch == 8 and roomy.notes == []
    # 8 GiB of RAM = 4 GiB budget: micro-batch 8 x 1024 is predicted over it.
    auto = plan_device(config, 8 * 1024**3, TrainConfig())
    assert auto.micro_batch < 8 and f"micro-batch {auto.micro_batch}, not 8" in " ".join(auto.notes)
    # 8 x 1024 tokens: 4.547 GiB predicted without checkpointing, 4.513 GiB with it; a 4.53 GiB budget (CPU: half
    # the RAM) fits only the second.
    fixed = plan_device(config, int(2 * 4.53 * 1024**3), TrainConfig(micro_batch="8", max_seq_len="1024"))
    assert fixed.gradient_checkpointing
    assert any(n.startswith("gradient checkpointing on") and "budget" in n for n in fixed.notes), fixed.notes
