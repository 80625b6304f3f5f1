"""Each model fixture loads strictly in transformers and generates with the real Gemma tokenizer; a test worker
runs on its own cores."""

from __future__ import annotations

import os

import pytest
import torch

from ftg.llama_runtime import usable_cores
from ftg.models import load_causal_lm


def test_a_test_worker_keeps_to_its_own_cores():
    """`pytest -n 2` (CI): conftest pins each worker, so its torch and llama.cpp threads do not fight the other's."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2 or os.cpu_count() < workers or not hasattr(os, "sched_setaffinity"):
        pytest.skip("one worker, fewer cores than workers, or no affinity (Windows): nothing is pinned")
    mine = os.sched_getaffinity(0)
    assert len(mine) <= os.cpu_count() // workers, mine
    assert torch.get_num_threads() == len(mine) and usable_cores() == len(mine)


@pytest.mark.parametrize("fixture_name", ["demo_model_dir", "tiny_gemma3_dir", "tiny_gemma3n_dir"])
def test_fixture_loads_and_generates(fixture_name, request, tokenizer_of):
    folder = request.getfixturevalue(fixture_name)
    tokenizer = tokenizer_of(folder)
    model = load_causal_lm(folder, dtype=torch.float32)
    assert len(tokenizer) == 262144
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Привет! How are you?"}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )
    ids = prompt["input_ids"]
    assert ids[0].tolist().count(tokenizer.bos_token_id) == 1
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    assert torch.isfinite(model(**prompt).logits).all()


def test_demo_model_is_real_gemma(demo_model_dir, tokenizer_of):
    """The demo folder carries real trained weights: plain English costs few nats per token.

    A random model with Gemma's vocabulary scores about ln(262144) = 12.5 nats per token; the real 270M scored 2.39
    on this sentence when this test was written.
    """
    tokenizer = tokenizer_of(demo_model_dir)
    model = load_causal_lm(demo_model_dir, dtype=torch.float32)
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == [2, 818, 5279, 529, 7001, 563]
    sentence = tokenizer("The capital of France is Paris. The capital of Germany is Berlin.", return_tensors="pt")
    with torch.no_grad():
        loss = model(**sentence, labels=sentence["input_ids"]).loss.item()
    assert loss < 3.5
