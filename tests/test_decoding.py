"""Decoded text equals HF's: llama.cpp turns HF's token ids back into HF's text, emoji and odd spaces included.

Gemma's byte tokens <0x00>..<0xFF> must be typed BYTE in the GGUF, which llama.cpp's converter does only when the
folder has tokenizer.model (its SentencePiece path). Without it the converter writes a GPT-2 style vocabulary whose
byte tokens are words, and llama.cpp prints "<0xF0><0x9F><0xA6><0xA1>" where HF prints 🦡, while every token id still
agrees with HF: the tokenizer check alone cannot see it, the decode check (ftg.gguf_check.check_decoding) does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from ftg.gguf_check import FALLBACK_CONVERSATIONS, build_reference, check_gguf, problems
from ftg.gguf_make import count_parameters
from ftg.llama_runtime import open_model
from ftg.paths import CONVERTER_SCRIPT
from ftg.tokenizer_model import TOKENIZER_MODEL

EMOJI_REPLIES = [
    "Ура, получилось! 🎉🦡",
    "ok 👍🏽 see you tomorrow 🫩",
    "Семья: 👨‍👩‍👧‍👦 и любовь ❤️‍🔥",
    "🧌🪿🩵 — rare ones",
]
"""Replies with emoji that fall back to byte tokens (🦡 🫩 🧌 🪿 🩵) and ZWJ sequences."""


@pytest.mark.slow  # 20 s: a second conversion of the tiny model; the fast loop checks decoding in the tiny family test
def test_decode_check_fails_on_byte_tokens_typed_normal(tiny_gemma3_dir, tmp_path, tokenizer_of):
    """llama.cpp's converter, run on the folder without tokenizer.model (what every Gemma 3 GGUF of ours was before
    issue 29), writes byte tokens as words: the token ids still match HF, the decoded text does not, and the check
    says so with the first differing text. (That our convert_hf_to_gguf passes it: test_families' stages test.)"""
    folder = tmp_path / "без tokenizer.model"
    shutil.copytree(tiny_gemma3_dir, folder, ignore=shutil.ignore_patterns(TOKENIZER_MODEL))
    words = tmp_path / "bytes-as-words-F16.gguf"
    subprocess.run([sys.executable, str(CONVERTER_SCRIPT), str(folder), "--outfile", str(words), "--outtype", "f16"],
                   check=True, capture_output=True)
    reference = build_reference(tiny_gemma3_dir, tokenizer_of(tiny_gemma3_dir), FALLBACK_CONVERSATIONS[:1], "test",
                                48, 4, count_parameters(tiny_gemma3_dir))
    bad = check_gguf(words, reference, 4)
    assert bad["tokenizer"]["ok"]  # ids alone agree
    assert not bad["decode"]["ok"] and bad["decode"]["mismatched_texts"] >= 3, bad["decode"]
    found = [p for p in problems(bad, 0.0) if p.startswith("decoded text differs")]
    assert found and "<0xF0>" in found[0] and "tokenizer.model" in found[0], problems(bad, 0.0)


def test_emoji_replies_read_the_same_through_the_demo_gguf(demo_model_dir, demo_gguf, tokenizer_of):
    """HF's ids of emoji replies decode through the demo GGUF to the same text; and greedy on the HF model and on the
    GGUF continues a run of badgers with the same byte tokens (🦡 is 4 byte tokens) and the same text, no "<0x"."""
    import torch

    from ftg.models import load_causal_lm

    tokenizer = tokenizer_of(demo_model_dir)
    prompt = [tokenizer.bos_token_id] + tokenizer("🦡🦡🦡🦡🦡🦡", add_special_tokens=False)["input_ids"]
    with open_model(demo_gguf, n_ctx=256) as model:
        assert model.metadata["tokenizer.ggml.model"] == "llama"  # SentencePiece, byte tokens typed BYTE
        for reply in EMOJI_REPLIES:
            ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
            assert model.tokenize(reply, special=False) == ids
            assert model.detokenize(ids) == tokenizer.decode(ids) == reply
        tokens = list(model.generate(prompt, 12))  # 12 = three whole emoji of 4 byte tokens
        text = model.detokenize(tokens)
    hf_model = load_causal_lm(demo_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        hf_tokens = hf_model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):]
    assert tokens == hf_tokens.tolist()
    assert text == tokenizer.decode(tokens) == "🦡🦡🦡" and "<0x" not in text, ascii(text)
