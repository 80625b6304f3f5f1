"""convert: merged model -> f16 GGUF -> quants, each checked against the merged model (load, tokenizer, logits,
reply), with gguf_report.json, the console table and an Ollama Modelfile; bad input gives one clear line.

The tiny models match the layout llama.cpp hard-codes:
- Gemma 3 (conftest's tiny_gemma3_dir): llama.cpp scales queries by 1/sqrt(head_dim) and makes every 6th layer full
  attention, so the tiny config sets query_pre_attn_scalar = head_dim and only sliding layers. With
  query_pre_attn_scalar 256 and layer 1 full attention, even an f32 GGUF agreed with HF on only 15.5% of next
  tokens; with these two fixed, 100% (mean KL 2e-8), in f16 too.
- Gemma-3n (built here): llama.cpp requires a per-layer input size of 256 (conftest's 8 does not load: "per_layer_token_embd has
  wrong shape") and a laurel rank of 64.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import psutil
import pytest
import torch

import convert
import pipeline
from ftg.config import load_config
from ftg.errors import UserError
from ftg import gguf_make
from ftg.gguf_check import check_conversations
from conftest import build_tiny_model
from lora_runs import TINY_LADDER, make_run

EVAL_LINES = [
    {"messages": [{"role": "user", "content": "Как прошли выходные?"},
                  {"role": "assistant", "content": "Отлично! Ездили на дачу, жарили шашлыки 🔥"}],
     "conversation_id": "a", "source": "telegram"},
    "this line is not JSON",
    {"messages": [{"role": "user", "content": "Can you fix this? print('hi'"},
                  {"role": "assistant", "content": "Sure, add the closing bracket: print('hi')"}],
     "conversation_id": "b", "source": "chatgpt"},
    {"conversation_id": "c"},
]


def write_eval_file(data_dir):
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = [item if isinstance(item, str) else json.dumps(item, ensure_ascii=False) for item in EVAL_LINES]
    (data_dir / "eval_dataset.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def project_config(project, **export):
    return load_config(overrides={"paths": {"output_dir": str(project / "output"), "data_dir": str(project / "data")},
                                  "export": export})


@pytest.fixture(scope="module")
def tiny_gemma3n_llamacpp_dir(demo_model_dir):
    from transformers import Gemma3nTextConfig

    # The per-layer embedding is 262144 x 2 layers x 256 = 134M weights (268 MB in bf16): the heavy part.
    config = Gemma3nTextConfig(
        vocab_size=262144, vocab_size_per_layer_input=262144, hidden_size=64, hidden_size_per_layer_input=256,
        intermediate_size=128, num_hidden_layers=2, num_kv_shared_layers=1,
        layer_types=["sliding_attention", "sliding_attention"], activation_sparsity_pattern=[0.95, 0.0],
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, laurel_rank=64, sliding_window=64,
        max_position_embeddings=2048, pad_token_id=0, bos_token_id=2, eos_token_id=1, dtype="bfloat16",
    )
    return build_tiny_model("tiny-gemma3n-llamacpp-v2", config, "Gemma3nForCausalLM", demo_model_dir, torch.bfloat16)


@pytest.mark.slow
def test_tiny_gemma3_export_writes_checked_files(tiny_gemma3_dir, project_copy, capsys):
    make_run(project_copy / "output", tiny_gemma3_dir, "Gemma3ForCausalLM")
    write_eval_file(project_copy / "data")
    out = project_copy / "output"
    code = pipeline.main(["export", "--output-dir", str(out), "--data-dir", str(project_copy / "data"),
                          "--quant", "q8_0", "--extra-quants", "Q4_K_M", "--no-style-report", "--keep-f16",
                          *(f"--{key.replace('_', '-')}={value}" for key, value in TINY_LADDER.items()),
                          "--report-reply-tokens", "12"])
    console = capsys.readouterr()
    assert code == 0, console.err

    assert sorted(p.name for p in out.glob("*.gguf")) == [
        "finetuned_gemma-F16.gguf", "finetuned_gemma-Q4_K_M.gguf", "finetuned_gemma.gguf"]
    assert not list(out.glob("*.partial")) and not list(out.glob("*.log"))
    report = json.loads((out / "gguf_report.json").read_text(encoding="utf-8"))
    assert report["status"] == "passed" and report["run_name"] == "test-run"
    assert report["reference"]["conversations"] == 2  # the malformed and the message-less lines are skipped
    assert report["reference"]["source"].endswith("eval_dataset.jsonl")
    rows = {row["type"]: row for row in report["files"]}
    assert list(rows) == ["F16", "Q8_0", "Q4_K_M"]
    assert rows["F16"]["logits"]["top1_agreement"] >= 0.99
    assert rows["F16"]["logits"]["mean_kl"] < 1e-3
    for row in rows.values():
        assert row["load"] and row["tokenizer"]["ok"] and row["tokenizer"]["texts"] == 8
        assert row["decode"]["ok"] and row["decode"]["texts"] == 12  # DECODE_TEXTS and the 2 eval replies
        assert row["reply"]["template_embedded"] and row["reply"]["prompt_matches_hf"]
        assert row["reply"]["end_of_turn_is_stop_token"] and row["reply"]["tags_found"] == []
        assert 0.0 <= row["logits"]["top1_agreement"] <= 1.0 and row["logits"]["mean_kl"] >= -1e-9
    assert rows["Q8_0"]["file"].endswith("finetuned_gemma.gguf")
    assert rows["Q4_K_M"]["size_bytes"] < rows["Q8_0"]["size_bytes"] < rows["F16"]["size_bytes"]

    modelfile = (out / "Modelfile").read_text(encoding="utf-8")
    assert "FROM ./finetuned_gemma.gguf" in modelfile and 'PARAMETER stop "<end_of_turn>"' in modelfile
    assert "<start_of_turn>model" in modelfile and 'TEMPLATE """' in modelfile
    assert "finetuned_gemma-F16.gguf" in console.out and "top-1" in console.out
    assert "lms import" in console.out and "koboldcpp" in console.out and "Next: chat" in console.out

    # convert_only redoes the conversion from output/merged without looking for the run; here without the checks.
    shutil.rmtree(out / "runs")
    cfg = project_config(project_copy, quant="Q3_K_M", verify_gguf=False)
    assert convert.run(cfg) == out / "finetuned_gemma.gguf"
    report = json.loads((out / "gguf_report.json").read_text(encoding="utf-8"))
    assert [row["type"] for row in report["files"]] == ["F16", "Q3_K_M"] and report["status"].startswith("not checked")
    assert "logits" not in report["files"][1] and report["files"][1]["size_bytes"] < rows["Q4_K_M"]["size_bytes"]


@pytest.mark.slow
def test_gemma3n_merges_converts_and_loads_but_fails_the_logit_check_loudly(tiny_gemma3n_llamacpp_dir, project_copy):
    """What happens today with a tiny Gemma-3n, asserted as it is.

    Merge restores the KV-shared layer's K/V tensors, the converter accepts the model, llama.cpp loads it and
    tokenizes like HF. But llama.cpp hard-codes the real Gemma-3n layout (KV sharing from layer 20 on, among others),
    so on a 2-layer model it computes K/V where HF reuses them: top-1 agreement was 21% here (6% and 75% in
    earlier measurements for other layouts). The f16 check must then stop the export loudly, before any quant is made.
    When the Gemma-3n parity work makes llama.cpp agree, this test has to flip to expect a passing export.
    """
    make_run(project_copy / "output", tiny_gemma3n_llamacpp_dir, "Gemma3nForCausalLM")
    out = project_copy / "output"
    with pytest.raises(UserError, match=r"GGUF check FAILED for finetuned_gemma-F16.gguf: top-1 agreement") as failure:
        pipeline.export(project_config(project_copy))
    assert "llama.cpp hard-codes the real Gemma-3n layout" in str(failure.value)
    merged = json.loads((out / "merged" / "merge.json").read_text(encoding="utf-8"))
    assert merged["restored_tensors"] == [f"model.layers.1.self_attn.{n}.weight" for n in ("k_norm", "k_proj", "v_proj")]
    report = json.loads((out / "gguf_report.json").read_text(encoding="utf-8"))
    (row,) = report["files"]
    assert report["status"] == "failed" and row["load"] and row["tokenizer"]["ok"] and row["decode"]["ok"]
    assert any("K/V in exactly the first 20 layers" in p for p in report["gemma3n_layout_problems"])
    assert row["logits"]["top1_agreement"] < 0.99
    assert not (out / "finetuned_gemma.gguf").exists()


def test_unknown_quant_is_one_clear_line(project_copy, capsys):
    code = convert.main(["--output-dir", str(project_copy / "output"), "--quant", "Q2_XS"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "unknown quant type 'Q2_XS'" in err and "Q4_K_M" in err and len(err.splitlines()) == 1


def test_missing_converter_and_missing_merge_are_clear(project_copy, monkeypatch):
    with pytest.raises(UserError, match="no merged model in .* Run merge_lora"):
        convert.run(project_config(project_copy))
    monkeypatch.setattr(gguf_make, "CONVERTER_SCRIPT", project_copy / "tools" / "convert_hf_to_gguf.py")
    with pytest.raises(UserError, match="converter is missing .* Run prepare_venv"):
        convert.run(project_config(project_copy))
    with pytest.raises(UserError, match="gguf_precision must be f16 or bf16"):
        convert.run(project_config(project_copy, gguf_precision="f32"))


@pytest.mark.skipif(os.name == "nt", reason="only POSIX reports a killed child as a negative return code")
def test_a_converter_killed_midway_says_so(tiny_gemma3_dir, tmp_path):
    """A killed converter (the out-of-memory killer sends SIGKILL) prints nothing, and its log's last line only
    says how far it got: "Set model tokenizer", once, in a clean-clone run on busy cores. The message names the
    signal instead, and what to do."""
    def kill_the_converter():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for child in psutil.Process().children(recursive=True):
                try:
                    if "convert_hf_to_gguf" in " ".join(child.cmdline()):
                        child.kill()
                        return
                except psutil.Error:
                    pass  # it ended or is not ours to read
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_converter)
    killer.start()
    out = tmp_path / "модель.gguf"
    with pytest.raises(UserError, match=r"stopped by SIGKILL .*ran out of memory.* What it did until then: "):
        gguf_make.convert_hf_to_gguf(tiny_gemma3_dir, out, "f16", 1_000_000)
    killer.join()
    assert not out.exists() and out.with_name(out.name + ".log").exists()


def test_quant_menu_takes_scripted_answers(capsys):
    def answers(*lines):
        replies = iter(lines)

        def ask(prompt):
            try:
                return next(replies)
            except StopIteration:
                raise EOFError from None

        return ask

    assert convert.choose_quant("Q4_K_M", 270_000_000, answers("")) == "Q4_K_M"
    assert convert.choose_quant("Q4_K_M", 270_000_000, answers("9", "q8_0")) == "Q8_0"
    assert convert.choose_quant("Q4_K_M", 270_000_000, answers("2")) == "Q6_K"
    assert convert.choose_quant("Q5_K_M", 0, answers()) == "Q5_K_M"
    shown = capsys.readouterr().out
    assert "'9' is not on the list" in shown and "~ 0.17 GB" in shown and "<- default" in shown


def test_eval_file_fallback_and_malformed_lines(tmp_path, capsys):
    conversations, source = check_conversations(tmp_path / "missing.jsonl", 3)
    assert len(conversations) == 3 and source.startswith("built-in")
    write_eval_file(tmp_path)
    conversations, source = check_conversations(tmp_path / "eval_dataset.jsonl", 8)
    assert [c[0]["content"] for c in conversations] == ["Как прошли выходные?", "Can you fix this? print('hi'"]
    assert "Skipped 2 malformed lines" in capsys.readouterr().out


@pytest.mark.slow
def test_without_the_runtime_the_converter_alone_writes_a_q8_0_gguf(tiny_gemma3_dir, project_copy, monkeypatch,
                                                                     capsys):
    """Setup could not install the llama.cpp runtime: the export still writes a Q8_0 GGUF (the converter's own
    quantization), skips the K-quants and the llama.cpp checks, and says so; chat then names what is missing."""
    import gguf

    from ftg import llama_runtime

    monkeypatch.setattr(llama_runtime, "_lib", None)  # as when llama-cpp-py-sync is not installed
    monkeypatch.setattr(llama_runtime, "_load_error", llama_runtime.RUNTIME_MISSING)
    make_run(project_copy / "output", tiny_gemma3_dir, "Gemma3ForCausalLM")
    out = project_copy / "output"
    main_file = pipeline.export(project_config(project_copy, quant="Q4_K_M", style_report=False))
    console = capsys.readouterr().out
    assert main_file == out / "finetuned_gemma.gguf" and sorted(p.name for p in out.glob("*.gguf")) == [main_file.name]
    reader = gguf.GGUFReader(main_file)
    fields = {name: reader.fields[name] for name in ("general.architecture", "general.file_type",
                                                    "tokenizer.chat_template")}
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "gemma3"
    assert int(fields["general.file_type"].parts[-1][0]) == gguf.LlamaFileType.MOSTLY_Q8_0
    assert "<start_of_turn>" in bytes(fields["tokenizer.chat_template"].parts[-1]).decode()
    report = json.loads((out / "gguf_report.json").read_text(encoding="utf-8"))
    assert report["status"] == f"not checked: {llama_runtime.RUNTIME_MISSING}" and report["files"][0]["type"] == "Q8_0"
    assert "skipped: the K-quants and the GGUF check" in console and "FROM ./finetuned_gemma.gguf" in (
        out / "Modelfile").read_text(encoding="utf-8")
