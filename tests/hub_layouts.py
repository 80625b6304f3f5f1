"""Tiny random models saved in the layouts the Hub checkpoints have, for the family tests.

Each folder copies its real checkpoint's structure, not its size:
- config.json with the same nesting (text_config / vision_config / audio_config) and architectures entry;
- tensors under the real names (model.language_model.*, model.vision_tower.*, model.audio_tower.*, model.embed_*);
- generation_config.json stopping on <eos> and the end-of-turn token, as the -it checkpoints do;
- the tokenizer files with the model's own chat template, and preprocessor_config.json / processor_config.json.

Gemma 3 multimodal (google/gemma-3-4b-it): Gemma3ForConditionalGeneration with a 1-layer SigLIP tower.
Gemma-3n (google/gemma-3n-E2B-it): Gemma3nForConditionalGeneration. Its vision tower is a timm MobileNetV5, and
  timm needs a torchvision that does not import beside torch 2.13, so the tower is NOT instantiated: a few of its
  tensors are written under their real names (model.vision_tower.timm_model.*, as llama.cpp's mmproj converter
  reads them) with random values. The language model, audio tower and embedders are real transformers modules.
Gemma 4 (google/gemma-4-E2B-it): Gemma4ForConditionalGeneration with tiny vision and audio towers. Its real tokenizer
  is not available offline, so the tokenizer is a STAND-IN: Gemma 3's 262,144-token vocabulary with Gemma 4's turn,
  thinking and tool tokens written over <start_of_turn>/<end_of_turn> (ids 105/106) and unused slots, and Gemma 4's
  official chat template (trl ships the one google/gemma-4-E2B-it had at commit 6b7e72c) with the generation prompt
  of llama.cpp's models/templates/gemma4.jinja, which closes an empty thinking channel when thinking is off.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from ftg.models import CACHE_DIR

LAYOUT_VERSION = 1
"""Bump when a layout below changes, so cached folders are rebuilt."""

GEMMA4_TOKENS = {
    "<start_of_turn>": "<|turn>", "<end_of_turn>": "<turn|>",
    "<unused0>": "<|channel>", "<unused1>": "<channel|>", "<unused2>": "<|think|>",
    "<unused3>": "<|tool>", "<unused4>": "<tool|>", "<unused5>": "<|tool_call>", "<unused6>": "<tool_call|>",
    "<unused7>": "<|tool_response>", "<unused8>": "<tool_response|>", "<unused9>": '<|"|>',
    "<unused10>": "<|image|>", "<unused11>": "<|audio|>", "<unused12>": "<|video|>",
}
"""Gemma 3 token -> the Gemma 4 token the stand-in writes in its place (same id)."""

EMPTY_THINKING_PROMPT = (
    "{%- if add_generation_prompt -%}\n"
    "    {%- if ns.prev_message_type != 'tool_response' and ns.prev_message_type != 'tool_call' -%}\n"
    "        {{- '<|turn>model\\n' -}}\n"
    "    {%- endif -%}\n"
    "    {%- if not enable_thinking | default(false) -%}\n"
    "        {{- '<|channel>thought\\n<channel|>' -}}\n"
    "    {%- endif -%}\n"
    "{%- endif -%}\n"
)
"""Gemma 4's generation prompt as llama.cpp's copy of the template writes it: thinking off = an empty channel."""


def _finish(partial: Path, folder: Path, what: dict) -> Path:
    (partial / "done.json").write_text(json.dumps(what), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    partial.replace(folder)
    return folder


def _start(name: str) -> tuple[Path, Path | None]:
    folder = CACHE_DIR / f"{name}-v{LAYOUT_VERSION}"
    if (folder / "done.json").exists():
        return folder, None
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return folder, partial


def _stop_tokens(model, end_of_turn_id: int) -> None:
    model.generation_config.eos_token_id = [1, end_of_turn_id]
    model.generation_config.pad_token_id = 0
    model.generation_config.bos_token_id = 2


def gemma3_multimodal(tokenizer_dir: Path, text_config) -> Path:
    """Gemma3ForConditionalGeneration: the tiny Gemma 3 text model + a 1-layer SigLIP tower (28 px, 14 px patches)."""
    from transformers import (AutoTokenizer, Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil,
                              SiglipVisionConfig)

    folder, partial = _start("hub-gemma3-mm")
    if partial is None:
        return folder
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14, vision_use_head=False)
    # 28 / 14 = 2 x 2 patches pooled to mm_tokens_per_image = 4 soft tokens per image.
    config = Gemma3Config(text_config=text_config.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                          boi_token_index=255999, eoi_token_index=256000, image_token_index=262144)
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config).to(torch.float32)
    _stop_tokens(model, 106)
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(partial)
    Gemma3ImageProcessorPil(size={"height": 28, "width": 28}).save_pretrained(partial)  # preprocessor_config.json
    (partial / "processor_config.json").write_text(
        json.dumps({"processor_class": "Gemma3Processor", "image_seq_length": 4}), encoding="utf-8")
    return _finish(partial, folder, {"class": "Gemma3ForConditionalGeneration"})


def gemma3n_multimodal(tokenizer_dir: Path, text_config) -> Path:
    """Gemma3nForConditionalGeneration: real language model, audio tower and embedders; the timm vision tower's
    tensors written under their real names without instantiating it (see the module docstring)."""
    from safetensors.torch import save_file
    from transformers import (AutoTokenizer, Gemma3nAudioConfig, Gemma3nConfig, Gemma3nForCausalLM,
                              Gemma3nVisionConfig)
    from transformers.models.gemma3n.modeling_gemma3n import Gemma3nAudioEncoder, Gemma3nMultimodalEmbedder

    folder, partial = _start("hub-gemma3n-mm")
    if partial is None:
        return folder
    audio = Gemma3nAudioConfig(hidden_size=32, conf_num_hidden_layers=1, conf_num_attention_heads=2,
                               sscp_conv_channel_size=[8, 4], input_feat_size=16)
    vision = Gemma3nVisionConfig(hidden_size=32)
    config = Gemma3nConfig(text_config=text_config.to_dict(), audio_config=audio.to_dict(),
                           vision_config=vision.to_dict())
    config.architectures = ["Gemma3nForConditionalGeneration"]
    torch.manual_seed(0)
    tensors = {}
    language = Gemma3nForCausalLM(config.text_config).to(torch.float32)
    for key, value in language.state_dict().items():
        if key.startswith("model."):  # lm_head is tied to embed_tokens and not saved, as in Google's files
            tensors["model.language_model." + key[len("model."):]] = value
    for prefix, module in (("model.audio_tower.", Gemma3nAudioEncoder(config.audio_config)),
                           ("model.embed_audio.", Gemma3nMultimodalEmbedder(config.audio_config, config.text_config)),
                           ("model.embed_vision.", Gemma3nMultimodalEmbedder(config.vision_config, config.text_config))):
        tensors.update({prefix + k: v.to(torch.float32) for k, v in module.state_dict().items()})
    generator = torch.Generator().manual_seed(1)
    timm = "model.vision_tower.timm_model."
    for name, shape in ((timm + "conv_stem.conv.weight", (8, 3, 3, 3)), (timm + "conv_stem.bn.weight", (8,)),
                        (timm + "blocks.0.0.conv_exp.weight", (16, 8, 3, 3)), (timm + "blocks.0.0.bn1.weight", (16,)),
                        (timm + "blocks.0.0.conv_pwl.weight", (8, 16, 1, 1)), (timm + "blocks.0.0.bn2.weight", (8,)),
                        (timm + "msfa.ffn.pw_proj.conv.weight", (32, 8, 1, 1)), (timm + "msfa.norm.weight", (32,))):
        tensors[name] = torch.randn(shape, generator=generator) * 0.02
    save_file({k: v.contiguous() for k, v in tensors.items()}, partial / "model.safetensors", metadata={"format": "pt"})
    config.save_pretrained(partial)
    language.generation_config.eos_token_id = [1, 106]
    language.generation_config.pad_token_id = 0
    language.generation_config.save_pretrained(partial)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(partial)
    (partial / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "Gemma3nAudioFeatureExtractor", "feature_size": 16, "sampling_rate": 16000,
        "image_processor_type": "SiglipImageProcessorFast", "size": {"height": 768, "width": 768},
        "processor_class": "Gemma3nProcessor"}, indent=2), encoding="utf-8")
    (partial / "processor_config.json").write_text(json.dumps(
        {"processor_class": "Gemma3nProcessor", "audio_seq_length": 188, "image_seq_length": 256}), encoding="utf-8")
    return _finish(partial, folder, {"class": "Gemma3nForConditionalGeneration",
                                     "note": "vision tower tensors written under their real names, not instantiated"})


def gemma4_standin_tokenizer(tokenizer_dir: Path, target: Path) -> None:
    """Gemma 3's tokenizer with Gemma 4's special tokens and chat template: a STAND-IN for the real one."""
    import trl
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(target)
    tokenizer_json = target / "tokenizer.json"
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    for token in data["added_tokens"]:
        token["content"] = GEMMA4_TOKENS.get(token["content"], token["content"])
    vocab = data["model"]["vocab"]
    if isinstance(vocab, dict):
        data["model"]["vocab"] = {GEMMA4_TOKENS.get(k, k): v for k, v in vocab.items()}
    else:  # unigram: [piece, score] pairs
        data["model"]["vocab"] = [[GEMMA4_TOKENS.get(p, p), s] for p, s in vocab]
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for entry in config.get("added_tokens_decoder", {}).values():
        entry["content"] = GEMMA4_TOKENS.get(entry["content"], entry["content"])
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    for name in ("tokenizer.model", "special_tokens_map.json"):
        (target / name).unlink(missing_ok=True)  # the SentencePiece model would bring Gemma 3's token names back
    template = (Path(trl.__file__).parent / "chat_templates" / "gemma4.jinja").read_text(encoding="utf-8")
    generation = template.index("{%- if add_generation_prompt -%}")
    (target / "chat_template.jinja").write_text(template[:generation] + EMPTY_THINKING_PROMPT, encoding="utf-8")
    (target / "STAND-IN.txt").write_text(
        "This tokenizer is a stand-in for Gemma 4's: Gemma 3's vocabulary with Gemma 4's special tokens at "
        "Gemma 3's turn ids and unused slots, and Gemma 4's chat template. Built by tests/hub_layouts.py.\n",
        encoding="utf-8")
    # Round trip through transformers so that every file agrees with the edited tokenizer.json.
    AutoTokenizer.from_pretrained(target).save_pretrained(target)


def tiny_gemma4_text_config(per_layer: int = 8):
    from transformers import Gemma4TextConfig

    return Gemma4TextConfig(
        vocab_size=262144, vocab_size_per_layer_input=262144, hidden_size=64, hidden_size_per_layer_input=per_layer,
        intermediate_size=128, num_hidden_layers=4, num_kv_shared_layers=2,  # layers 2, 3 reuse K/V of 0, 1
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, global_head_dim=64, sliding_window=64,
        max_position_embeddings=2048, pad_token_id=0, bos_token_id=2, eos_token_id=1,
    )


def gemma4_multimodal(tokenizer_dir: Path, text_config=None) -> Path:
    """Gemma4ForConditionalGeneration with tiny vision and audio towers and the stand-in tokenizer."""
    from transformers import Gemma4AudioConfig, Gemma4Config, Gemma4ForConditionalGeneration, Gemma4VisionConfig

    folder, partial = _start("hub-gemma4-mm")
    if partial is None:
        return folder
    text_config = text_config or tiny_gemma4_text_config()
    vision = Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=16, position_embedding_size=64)
    audio = Gemma4AudioConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, output_proj_dims=32,
                              subsampling_conv_channels=[8, 4])
    config = Gemma4Config(text_config=text_config.to_dict(), vision_config=vision.to_dict(),
                          audio_config=audio.to_dict())
    torch.manual_seed(0)
    model = Gemma4ForConditionalGeneration(config).to(torch.float32)
    _stop_tokens(model, 106)  # <turn|> sits at id 106 in the stand-in vocabulary
    model.save_pretrained(partial)
    gemma4_standin_tokenizer(tokenizer_dir, partial)
    (partial / "processor_config.json").write_text(json.dumps(
        {"processor_class": "Gemma4Processor", "note": "tiny fixture: no image/audio processing is tested"}),
        encoding="utf-8")
    return _finish(partial, folder, {"class": "Gemma4ForConditionalGeneration", "tokenizer": "stand-in"})


def tensor_prefixes(folder: Path) -> set[str]:
    """The first two parts of every tensor name in a folder's safetensors files (model.language_model, ...)."""
    from safetensors import safe_open

    prefixes = set()
    for path in Path(folder).glob("*.safetensors"):
        with safe_open(path, "pt") as handle:
            prefixes |= {".".join(re.split(r"\.", key)[:2]) for key in handle.keys()}
    return prefixes
