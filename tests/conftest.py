"""Shared fixtures: the real Gemma 3 270M demo folder and tiny random Gemma 3 / Gemma-3n models.

Everything slow to build is cached under ~/.cache/finetune-gemma (FTG_CACHE_DIR), outside the repository, so a
second test run, or a fresh clone on the same machine, reuses it. The tiny models use the real Gemma tokenizer
(262,144 tokens) from the demo folder, so chat templates and token ids are the real ones.

`pytest -n 2` (README, CI) runs the suite in two pytest-xdist workers, each pinned to its own cores
(pin_this_worker_to_its_cores). Each worker has its own session, so the cached builds below take a lock
(one_build_at_a_time). A worker takes whole files (--dist loadfile), so a module fixture is built once: the one real
fine-tune is test_style_acceptance.py's sailor_run.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path


def pin_this_worker_to_its_cores() -> None:
    """Under `pytest -n N`, worker gw<i> keeps cores i, i+N, ... of this process's cores, and so does every torch,
    llama.cpp and chromium thread it starts (subprocesses inherit the mask). Unpinned, two workers' trainings each
    ran 2 torch threads on 2 cores and took 3.6x as long (dev_log, stop 32). It runs before `import torch`: torch's
    OpenMP sizes its thread pool from this mask when it loads."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and count.isdigit() and hasattr(os, "sched_setaffinity")):
        return
    cores = sorted(os.sched_getaffinity(0))[int(worker[2:])::int(count)]
    if cores:  # more workers than cores: leave them unpinned
        os.sched_setaffinity(0, cores)


pin_this_worker_to_its_cores()

# The imports below come after the pinning on purpose: they load torch.
import pytest
import torch
from filelock import FileLock

from download_model import build_demo_model, demo_cache_dir
from ftg.config import PROJECT_ROOT
from ftg.models import CACHE_DIR

TINY_VERSION = 3
"""Bump when the tiny configs or their tokenizer files change, so cached folders are rebuilt (3: tokenizer.model)."""


BUDGETS = PROJECT_ROOT / "bench" / "ci_budgets.json"


def pytest_collection_modifyitems(config, items):
    """With `-n 2`, `--dist loadfile` (pytest.ini) sends each test file whole to one worker, in the order collected:
    slowest file first by bench/ci_budgets.json, so that the two workers end close together. One process: unchanged."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    budgets = json.loads(BUDGETS.read_text(encoding="utf-8"))["seconds_per_file"]
    items.sort(key=lambda item: -budgets.get(f"tests/{item.path.name}", 0))  # stable: a file's own order is kept


def one_build_at_a_time(build):
    """For a session fixture that builds into CACHE_DIR: the two xdist workers may ask for it at once; the second
    waits for the first's build, then finds it done (every build here checks for a finished folder first)."""

    @functools.wraps(build)
    def locked(*args, **kwargs):
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        with FileLock(CACHE_DIR / f".{build.__name__}.lock"):
            return build(*args, **kwargs)

    return locked


def gpu_available() -> bool:
    return torch.cuda.is_available()


requires_gpu = pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="session")
def tokenizer_of():
    """ftg.models.load_tokenizer, once per folder for the session: a Gemma tokenizer.json takes about 3 s to read on
    2 cores, and the tests read the same few folders' tokenizers again and again. Tests only use it (encode, decode,
    apply_chat_template); a test that changes a tokenizer loads its own."""
    from ftg.models import load_tokenizer

    return functools.cache(lambda folder: load_tokenizer(Path(folder)))


@pytest.fixture(scope="session")
@one_build_at_a_time
def demo_model_dir() -> Path:
    """The real Gemma 3 270M as a float32 safetensors folder with Gemma's chat template and the Hub's tokenizer files
    (tokenizer.model beside tokenizer.json; built once, ~100 s)."""
    return build_demo_model(demo_cache_dir())


def tiny_gemma3_config():
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        # llama.cpp scales queries by 1/sqrt(head_dim) and hard-codes every 6th layer as full attention; with these
        # two values the tiny model computes the same function in llama.cpp as in transformers (tests/test_convert.py).
        query_pre_attn_scalar=32,
        layer_types=["sliding_attention", "sliding_attention"],
        sliding_window=64,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
    )


def tiny_gemma3n_config():
    from transformers import Gemma3nTextConfig

    return Gemma3nTextConfig(
        vocab_size=262144,
        vocab_size_per_layer_input=262144,
        hidden_size=64,
        hidden_size_per_layer_input=8,
        intermediate_size=128,
        num_hidden_layers=4,
        num_kv_shared_layers=2,  # layers 2 and 3 reuse K/V of layers 0 and 1, as in the real E2B/E4B
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        activation_sparsity_pattern=[0.95, 0.0, 0.0, 0.0],
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        laurel_rank=8,
        sliding_window=64,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
    )


def build_tiny_model(name: str, config, model_class_name: str, tokenizer_dir: Path, dtype=torch.float32) -> Path:
    """Save a random model of `config` with the real Gemma tokenizer under CACHE_DIR/name (built once)."""
    import transformers

    from hub_layouts import save_hub_tokenizer

    folder = CACHE_DIR / name
    if (folder / "done.json").exists():
        return folder
    torch.manual_seed(0)
    model = getattr(transformers, model_class_name)(config).to(dtype)
    # The end-of-turn token must be a stop token, as in the real -it checkpoints.
    model.generation_config.eos_token_id = [1, 106]
    model.generation_config.pad_token_id = 0
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    save_hub_tokenizer(tokenizer_dir, partial)
    (partial / "done.json").write_text(json.dumps({"class": model_class_name}), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    partial.replace(folder)
    return folder


@pytest.fixture(scope="session")
@one_build_at_a_time
def tiny_gemma3_dir(demo_model_dir) -> Path:
    """A 2-layer random Gemma3ForCausalLM (hidden 64) with the real Gemma tokenizer and chat template."""
    return build_tiny_model(f"tiny-gemma3-v{TINY_VERSION}", tiny_gemma3_config(), "Gemma3ForCausalLM", demo_model_dir)


@pytest.fixture(scope="session")
@one_build_at_a_time
def tiny_gguf(tiny_gemma3_dir) -> Path:
    """The 2-layer random Gemma 3 as an f16 GGUF (with the chat template): a model that answers unlike the 270M."""
    from ftg.gguf_make import convert_hf_to_gguf, count_parameters

    target = CACHE_DIR / "tiny-gguf" / f"{tiny_gemma3_dir.name}-F16.gguf"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        convert_hf_to_gguf(tiny_gemma3_dir, target, "f16", count_parameters(tiny_gemma3_dir))
    return target


@pytest.fixture(scope="session")
@one_build_at_a_time
def tiny_gemma3n_dir(demo_model_dir) -> Path:
    """A 4-layer random Gemma3nForCausalLM (2 KV-shared layers) with the real Gemma tokenizer and chat template."""
    return build_tiny_model(f"tiny-gemma3n-v{TINY_VERSION}", tiny_gemma3n_config(), "Gemma3nForCausalLM",
                            demo_model_dir)


@pytest.fixture(scope="session")
@one_build_at_a_time
def demo_gguf(demo_model_dir) -> Path:
    """The demo model as a Q4_K_M GGUF with Gemma's chat template embedded, converted once by
    ftg.gguf_make.ensure_base_gguf (the code chat --compare uses) into CACHE_DIR/demo-gguf-v<DEMO_VERSION>; its
    base_model.json records the folder's fingerprint, so a later session reuses it."""
    from download_model import DEMO_VERSION
    from ftg.config import load_config
    from ftg.gguf_make import ensure_base_gguf

    # The demo's version in the name: each demo folder gets its own GGUF instead of converting over another's.
    cfg = load_config(overrides={"paths": {"output_dir": CACHE_DIR / f"demo-gguf-v{DEMO_VERSION}"},
                                 "model": {"model": str(demo_model_dir)}})
    return ensure_base_gguf(cfg, demo_model_dir)


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """An empty project-like folder (with a Cyrillic name and a space) for stages to write into."""
    root = tmp_path / "проект с пробелом"
    for sub in ("dataset", "data", "output", "models"):
        (root / sub).mkdir(parents=True)
    return root


@pytest.fixture(scope="session")
@one_build_at_a_time
def hub_gemma3_mm_dir(demo_model_dir) -> Path:
    """google/gemma-3-4b-it's layout (Gemma3ForConditionalGeneration + SigLIP), tiny and random (tests/hub_layouts.py)."""
    from hub_layouts import gemma3_multimodal

    return gemma3_multimodal(demo_model_dir, tiny_gemma3_config())


@pytest.fixture(scope="session")
@one_build_at_a_time
def hub_gemma3n_mm_dir(demo_model_dir) -> Path:
    """google/gemma-3n-E2B-it's layout (Gemma3nForConditionalGeneration), tiny and random; the timm vision tower is
    written as tensors under its real names, not instantiated (tests/hub_layouts.py)."""
    from hub_layouts import gemma3n_multimodal

    return gemma3n_multimodal(demo_model_dir, tiny_gemma3n_config())


@pytest.fixture(scope="session")
@one_build_at_a_time
def hub_gemma4_mm_dir(demo_model_dir) -> Path:
    """google/gemma-4-E2B-it's layout (Gemma4ForConditionalGeneration), tiny and random, with a STAND-IN tokenizer:
    Gemma 3's vocabulary + Gemma 4's special tokens at their ids, in the Hub's file layout (tests/hub_layouts.py)."""
    from hub_layouts import gemma4_multimodal

    return gemma4_multimodal(demo_model_dir)
