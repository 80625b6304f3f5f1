"""merge_lora: the merged model equals base + adapter, reloads strictly, is sharded, stops on <end_of_turn>,
restores the Gemma-3n tensors llama.cpp needs, and a second merge does nothing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import merge_lora
from ftg.config import load_config
from ftg.errors import UserError
from lora_runs import make_run


def project_config(project, **export):
    return load_config(overrides={"paths": {"output_dir": str(project / "output"), "data_dir": str(project / "data")},
                                  "export": export})


def load_strictly(folder):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}, "missing, unexpected or mismatched keys"
    return model


@pytest.mark.slow  # 12 s; the fast loop merges in the tiny family test
def test_merge_matches_the_adapter_reloads_strictly_and_is_idempotent(tiny_gemma3_dir, project_copy, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = make_run(project_copy / "output", tiny_gemma3_dir, "Gemma3ForCausalLM")
    # 50 MB shards: the 67 MB embedding gets a shard of its own, the layers another.
    cfg = project_config(project_copy, max_shard_size="50MB")
    merged = merge_lora.run(cfg)

    assert merged == project_copy / "output" / "merged"
    assert not (project_copy / "output" / "merged.partial").exists()
    shards = sorted(merged.glob("*.safetensors"))
    assert len(shards) == 2 and (merged / "model.safetensors.index.json").exists()
    record = json.loads((merged / "merge.json").read_text(encoding="utf-8"))
    assert record["run_name"] == "test-run" and record["adapter"] == str(run_dir / "best")
    assert record["restored_tensors"] == [] and record["left_out"] == []
    generation = json.loads((merged / "generation_config.json").read_text(encoding="utf-8"))
    assert 106 in generation["eos_token_id"] and 1 in generation["eos_token_id"]
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert "<start_of_turn>" in tokenizer.chat_template

    model = load_strictly(merged)
    ids = torch.tensor([[2, 105, 818, 5279, 529, 7001, 563, 106]])  # the turn tokens' trained rows in and out
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_gemma3_dir, dtype=torch.float32), run_dir / "best")
    base = AutoModelForCausalLM.from_pretrained(tiny_gemma3_dir, dtype=torch.float32)
    with torch.no_grad():
        merged_logits, adapter_logits = model(ids).logits, reference(ids).logits
        base_logits = base(ids).logits
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-4, rtol=1e-4)
    assert (merged_logits - base_logits).abs().max() > 1e-3, "the merge did not change the model"
    # The turn tokens' rows are folded into the embedding, which stays tied to the output layer.
    trained = reference.get_base_model().model.embed_tokens.token_adapter.trainable_tokens_delta["default"]
    torch.testing.assert_close(model.model.embed_tokens.weight[[105, 106]], trained)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    stamp = (merged / "merge.json").stat().st_mtime_ns
    capsys.readouterr()
    assert merge_lora.run(cfg) == merged
    assert "Already merged" in capsys.readouterr().out
    assert (merged / "merge.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_gemma3n_kv_shared_tensors_are_restored(tiny_gemma3n_dir, project_copy, tmp_path):
    """transformers 5.x saves no k_proj/v_proj/k_norm in KV-shared layers (2 and 3 here); llama.cpp needs them."""
    base_keys = set(load_file(tiny_gemma3n_dir / "model.safetensors"))
    assert "model.layers.2.self_attn.k_proj.weight" not in base_keys
    make_run(project_copy / "output", tiny_gemma3n_dir, "Gemma3nForCausalLM")
    merged = merge_lora.run(project_config(project_copy))

    wanted = [f"model.layers.{i}.self_attn.{n}.weight" for i in (2, 3) for n in ("k_norm", "k_proj", "v_proj")]
    assert json.loads((merged / "merge.json").read_text(encoding="utf-8"))["restored_tensors"] == wanted
    saved = load_file(merged / "model.safetensors")
    for key in wanted:
        assert not saved[key].any(), f"{key}: the base has none, so it is restored as zeros"
    assert saved["model.layers.2.self_attn.k_proj.weight"].shape == (32, 64)  # 1 KV head x 32, hidden 64
    load_strictly(merged)  # transformers ignores them on load, as it does for Google's checkpoints

    # A base checkpoint that has them (as Google's do): the restored tensors are the base's values.
    base_with_kv = tmp_path / "base with kv"
    base_with_kv.mkdir()
    for item in tiny_gemma3n_dir.iterdir():
        if item.name != "model.safetensors":
            (base_with_kv / item.name).write_bytes(item.read_bytes())
    tensors = load_file(tiny_gemma3n_dir / "model.safetensors")
    extra = {key: torch.full(saved[key].shape, 0.5) for key in wanted}
    save_file({**tensors, **extra}, base_with_kv / "model.safetensors", metadata={"format": "pt"})
    other = tmp_path / "other project"
    make_run(other / "output", base_with_kv, "Gemma3nForCausalLM")
    merged = merge_lora.run(project_config(other))
    with safe_open(merged / "model.safetensors", "pt") as handle:
        for key in wanted:
            assert torch.equal(handle.get_tensor(key), extra[key])


def test_no_run_is_one_clear_line(project_copy, capsys):
    code = merge_lora.main(["--output-dir", str(project_copy / "output")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "no training run found" in err and "finetune_gemma" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    with pytest.raises(UserError, match="no training run 'nope'"):
        merge_lora.run(project_config(project_copy), "nope")


def test_latest_run_is_the_newest_run_json(tmp_path):
    """find_run reads only run.json (and latest_run.txt), so the runs here have no adapters."""
    import os

    from ftg.runs import find_run

    output = tmp_path / "выход"
    old, new = output / "runs" / "old", output / "runs" / "новый"
    for run in (old, new):
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"run_name": run.name}, ensure_ascii=False), encoding="utf-8")
    os.utime(old / "run.json", (1, 1))
    assert find_run(output) == new
    assert find_run(output, "old") == old
    (output / "runs" / "latest_run.txt").write_text("old", encoding="utf-8")
    assert find_run(output) == old


def test_full_disk_is_refused_before_any_work(tiny_gemma3_dir, project_copy, monkeypatch):
    """A real merge on a disk that reports less free space than the base checkpoint: refused before the base model
    is loaded, and nothing is left in output/."""
    import shutil
    from collections import namedtuple

    make_run(project_copy / "output", tiny_gemma3_dir, "Gemma3ForCausalLM")
    base_bytes = sum(p.stat().st_size for p in tiny_gemma3_dir.glob("*.safetensors"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - base_bytes, base_bytes))
    loaded = []
    monkeypatch.setattr(merge_lora, "load_base", lambda *args: loaded.append(args))
    with pytest.raises(UserError, match=r"not enough disk space for the merged model in .*: 0\.\d GB needed"):
        merge_lora.run(project_config(project_copy))
    assert loaded == []
    assert sorted(p.name for p in (project_copy / "output").iterdir()) == ["runs"]
