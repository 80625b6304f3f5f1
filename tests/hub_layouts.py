"""Tiny random models saved in the layouts the Hub checkpoints have, for the family tests.

Each folder copies its real checkpoint's structure, not its size:
- config.json with the same nesting (text_config / vision_config / audio_config) and architectures entry;
- tensors under the real names (model.language_model.*, model.vision_tower.*, model.audio_tower.*, model.embed_*);
- generation_config.json stopping on <eos> and the end-of-turn token, as the -it checkpoints do;
- the tokenizer files with the model's own chat template (Gemma 3 / 3n: tokenizer.model beside tokenizer.json and
  the Hub's tokenizer_config.json fields, as google/gemma-3-* and gemma-3n-* ship them), and preprocessor_config.json / processor_config.json.

Gemma 3 multimodal (google/gemma-3-4b-it): Gemma3ForConditionalGeneration with a 1-layer SigLIP tower.
Gemma-3n (google/gemma-3n-E2B-it): Gemma3nForConditionalGeneration. Its vision tower is a timm MobileNetV5, and
  timm needs a torchvision that does not import beside torch 2.13, so the tower is NOT instantiated: a few of its
  tensors are written under their real names (model.vision_tower.timm_model.*, as llama.cpp's mmproj converter
  reads them) with random values. The language model, audio tower and embedders are real transformers modules.
Gemma 4 (google/gemma-4-E2B-it): Gemma4ForConditionalGeneration with tiny vision and audio towers. Its real tokenizer
  is not available offline, so the tokenizer is a STAND-IN: Gemma 3's 262,144-token vocabulary and merges (close, not
  equal: of 15 ordinary Gemma 4 token ids that public tests list, 14 are Gemma 3's too, "Four" is not) with Gemma 4's
  19 special tokens written over the Gemma 3 pieces at their real Gemma 4 ids (<|turn> 105, <turn|> 106,
  <|channel> 100, <|tool> 46, <|image|> 258880...). Its files are made the way the Hub's were (transformers' Gemma 4
  conversion script): GemmaTokenizer(vocab, merges, add_bos_token=False, padding_side="left",
  extra_special_tokens={sot_token: "<|turn>", ...}), so tokenizer_config.json names every special token (sot_token,
  eot_token, soc_token, ..., extra_special_tokens ["<|video|>"], processor_class) and tokenizer.json lists only the 24
  special tokens as added tokens (Gemma 3's 6,384, HTML tags and <unusedN> included, are not).
  Its chat template is Gemma 4's official one (trl ships the one google/gemma-4-E2B-it had at commit 6b7e72c) with
  the generation prompt of llama.cpp's models/templates/gemma4.jinja, which closes an empty thinking channel when
  thinking is off.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from ftg.models import CACHE_DIR

LAYOUT_VERSION = 3
"""Bump when a layout below changes, so cached folders are rebuilt (3: Gemma 3 / 3n carry tokenizer.model)."""

GEMMA4_TOKEN_IDS = {
    "<|tool>": 46, "<tool|>": 47, "<|tool_call>": 48, "<tool_call|>": 49, "<|tool_response>": 50,
    "<tool_response|>": 51, '<|"|>': 52, "<|think|>": 98, "<|channel>": 100, "<channel|>": 101,
    "<|turn>": 105, "<turn|>": 106, "<|image>": 255999, "<|audio>": 256000,
    "<|image|>": 258880, "<|audio|>": 258881, "<image|>": 258882, "<audio|>": 258883, "<|video|>": 258884,
}
"""Gemma 4's special tokens at their ids in google/gemma-4-*: the multimodal ones as Gemma4Config's defaults
(image_token_id 258880...), the others as public Gemma 4 tokenizer and parser tests list them (read 2026-12-02).
In Gemma 3's vocabulary these ids hold <unused40>..<unused95>, <start_of_turn>/<end_of_turn>,
<start_of_image>/<end_of_image> and <unused2978>..<unused2982>, which the stand-in writes over."""

GEMMA4_NAMED_TOKENS = {
    "image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>", "audio_token": "<|audio|>",
    "boa_token": "<|audio>", "eoa_token": "<audio|>", "sot_token": "<|turn>", "eot_token": "<turn|>",
    "soc_token": "<|channel>", "eoc_token": "<channel|>", "think_token": "<|think|>", "escape_token": '<|"|>',
    "str_token": "<|tool_response>", "etr_token": "<tool_response|>", "stc_token": "<|tool_call>",
    "etc_token": "<tool_call|>", "std_token": "<|tool>", "etd_token": "<tool|>",
}
"""extra_special_tokens as transformers' Gemma 4 conversion script passes them; google/gemma-4-*'s
tokenizer_config.json carries these keys, plus extra_special_tokens ["<|video|>"]. They make the tokens special
(all_special_ids), which is how llama.cpp's converter tells a control token from a plain word."""

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


def save_hub_tokenizer(tokenizer_dir: Path, target: Path) -> None:
    """The demo's Gemma 3 tokenizer in the Hub's shape: what transformers saves (tokenizer.json, tokenizer_config.json,
    chat_template.jinja), plus tokenizer.model and the Hub's tokenizer_config.json fields, which it drops."""
    from transformers import AutoTokenizer

    from download_model import HUB_TOKENIZER_FIELDS
    from ftg.tokenizer_model import TOKENIZER_MODEL

    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(target)
    shutil.copy2(Path(tokenizer_dir) / TOKENIZER_MODEL, Path(target) / TOKENIZER_MODEL)
    config_path = Path(target) / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(HUB_TOKENIZER_FIELDS)
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _stop_tokens(model, end_of_turn_id: int) -> None:
    model.generation_config.eos_token_id = [1, end_of_turn_id]
    model.generation_config.pad_token_id = 0
    model.generation_config.bos_token_id = 2


def gemma3_multimodal(tokenizer_dir: Path, text_config) -> Path:
    """Gemma3ForConditionalGeneration: the tiny Gemma 3 text model + a 1-layer SigLIP tower (28 px, 14 px patches)."""
    from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil,
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
    save_hub_tokenizer(tokenizer_dir, partial)
    Gemma3ImageProcessorPil(size={"height": 28, "width": 28}).save_pretrained(partial)  # preprocessor_config.json
    (partial / "processor_config.json").write_text(
        json.dumps({"processor_class": "Gemma3Processor", "image_seq_length": 4}), encoding="utf-8")
    return _finish(partial, folder, {"class": "Gemma3ForConditionalGeneration"})


GEMMA3N_FAITHFUL_LAYERS, GEMMA3N_FAITHFUL_SHARED, GEMMA3N_FAITHFUL_HIDDEN = 22, 2, 64


def faithful_gemma3n_config(per_layer_rows: int = 262144):
    """Gemma-3n at the real E2B/E4B layout llama.cpp hard-codes (20 K/V layers + shared ones, per-layer width 256,
    laurel 64, sparsity on the first 10 layers, E2B's FFN width 8192), tiny where llama.cpp allows: hidden 64,
    2 heads of 32, 2 shared layers. The per-layer table (262144 x 22 x 256 = 1.48 B weights) is the heavy part;
    `per_layer_rows` keeps only its first rows in transformers (ids beyond them read row 0)."""
    from transformers import Gemma3nTextConfig

    layers = GEMMA3N_FAITHFUL_LAYERS
    return Gemma3nTextConfig(
        vocab_size=262144,
        vocab_size_per_layer_input=per_layer_rows,
        hidden_size=GEMMA3N_FAITHFUL_HIDDEN,
        hidden_size_per_layer_input=256,
        # E2B's width: llama.cpp's n-1 std in the sparsity cutoff is negligible there, and it takes one width for all
        intermediate_size=8192,
        num_hidden_layers=layers,
        num_kv_shared_layers=GEMMA3N_FAITHFUL_SHARED,
        activation_sparsity_pattern=[0.95] * 10 + [0.0] * (layers - 10),
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        laurel_rank=64,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
    )


def condition_gemma3n(model) -> None:
    """Make a random Gemma-3n as well-conditioned as a trained one (a Gemma3nForCausalLM, in place).

    Post-norm weights 0.1 instead of 1: at transformers' default init a random Gemma-3n amplifies rounding by about
    1.5x per layer, so 22 layers turn f16 rounding alone into 83 % top-1 agreement. Altup output scale 1 instead of
    0: the default zero would switch the per-layer-input path off.
    """
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.post_attention_layernorm, layer.post_feedforward_layernorm,
                         layer.post_per_layer_input_norm, layer.laurel.post_laurel_norm):
                norm.weight.fill_(0.1)
            layer.altup.correct_output_scale.fill_(1.0)


def gemma3n_multimodal(tokenizer_dir: Path, text_config, name: str = "hub-gemma3n-mm", dtype=torch.float32,
                       condition=None) -> Path:
    """Gemma3nForConditionalGeneration: real language model, audio tower and embedders; the timm vision tower's
    tensors written under their real names without instantiating it (see the module docstring).

    name: the cache folder's name; dtype: of the saved tensors (Google's files are bf16); condition: called on the
    random Gemma3nForCausalLM before it is saved (condition_gemma3n for a GGUF round trip)."""
    from safetensors.torch import save_file
    from transformers import (Gemma3nAudioConfig, Gemma3nConfig, Gemma3nForCausalLM,
                              Gemma3nVisionConfig)
    from transformers.models.gemma3n.modeling_gemma3n import Gemma3nAudioEncoder, Gemma3nMultimodalEmbedder

    folder, partial = _start(name)
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
    if condition is not None:
        condition(language)
    language.to(dtype)  # in place, one tensor at a time: the full-size per-layer table is 5.9 GB in float32
    for key, value in language.state_dict().items():
        if key.startswith("model."):  # lm_head is tied to embed_tokens and not saved, as in Google's files
            tensors["model.language_model." + key[len("model."):]] = value
    for prefix, module in (("model.audio_tower.", Gemma3nAudioEncoder(config.audio_config)),
                           ("model.embed_audio.", Gemma3nMultimodalEmbedder(config.audio_config, config.text_config)),
                           ("model.embed_vision.", Gemma3nMultimodalEmbedder(config.vision_config, config.text_config))):
        tensors.update({prefix + k: v.to(dtype) for k, v in module.state_dict().items()})
    generator = torch.Generator().manual_seed(1)
    timm = "model.vision_tower.timm_model."
    for key, shape in ((timm + "conv_stem.conv.weight", (8, 3, 3, 3)), (timm + "conv_stem.bn.weight", (8,)),
                       (timm + "blocks.0.0.conv_exp.weight", (16, 8, 3, 3)), (timm + "blocks.0.0.bn1.weight", (16,)),
                       (timm + "blocks.0.0.conv_pwl.weight", (8, 16, 1, 1)), (timm + "blocks.0.0.bn2.weight", (8,)),
                       (timm + "msfa.ffn.pw_proj.conv.weight", (32, 8, 1, 1)), (timm + "msfa.norm.weight", (32,))):
        tensors[key] = (torch.randn(shape, generator=generator) * 0.02).to(dtype)
    save_file({k: v.contiguous() for k, v in tensors.items()}, partial / "model.safetensors", metadata={"format": "pt"})
    config.save_pretrained(partial)
    language.generation_config.eos_token_id = [1, 106]
    language.generation_config.pad_token_id = 0
    language.generation_config.save_pretrained(partial)
    save_hub_tokenizer(tokenizer_dir, partial)
    (partial / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "Gemma3nAudioFeatureExtractor", "feature_size": 16, "sampling_rate": 16000,
        "image_processor_type": "SiglipImageProcessorFast", "size": {"height": 768, "width": 768},
        "processor_class": "Gemma3nProcessor"}, indent=2), encoding="utf-8")
    (partial / "processor_config.json").write_text(json.dumps(
        {"processor_class": "Gemma3nProcessor", "audio_seq_length": 188, "image_seq_length": 256}), encoding="utf-8")
    return _finish(partial, folder, {"class": "Gemma3nForConditionalGeneration",
                                     "note": "vision tower tensors written under their real names, not instantiated"})


def gemma4_standin_tokenizer(tokenizer_dir: Path, target: Path) -> None:
    """Gemma 3's vocabulary and merges with Gemma 4's special tokens, saved as the Hub's Gemma 4 files are made:
    a STAND-IN for the real tokenizer (see the module docstring)."""
    import trl
    from transformers import GemmaTokenizer

    gemma3 = json.loads((Path(tokenizer_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    assert gemma3["model"]["type"] == "BPE", gemma3["model"]["type"]
    by_id = {index: piece for piece, index in gemma3["model"]["vocab"].items()}
    by_id.update({index: token for token, index in GEMMA4_TOKEN_IDS.items()})
    vocab = {piece: index for index, piece in sorted(by_id.items())}
    template = (Path(trl.__file__).parent / "chat_templates" / "gemma4.jinja").read_text(encoding="utf-8")
    generation = template.index("{%- if add_generation_prompt -%}")
    tokenizer = GemmaTokenizer(vocab=vocab, merges=[tuple(m) for m in gemma3["model"]["merges"]], add_bos_token=False,
                               padding_side="left", extra_special_tokens=GEMMA4_NAMED_TOKENS,
                               chat_template=template[:generation] + EMPTY_THINKING_PROMPT)
    tokenizer.add_special_tokens({"extra_special_tokens": ["<|video|>"]})
    tokenizer.save_pretrained(target)
    # The Hub's file is written by Gemma4Processor.save_pretrained, which adds its processor_class.
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["processor_class"] = "Gemma4Processor"
    config_path.write_text(json.dumps(dict(sorted(config.items())), ensure_ascii=False, indent=2) + "\n",
                           encoding="utf-8")
    (target / "STAND-IN.txt").write_text(
        "This tokenizer is a stand-in for Gemma 4's: Gemma 3's vocabulary and merges with Gemma 4's special tokens "
        "at their Gemma 4 ids, saved the way the Hub's Gemma 4 tokenizer files were made, and Gemma 4's chat "
        "template. Built by tests/hub_layouts.py.\n", encoding="utf-8")


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
    _stop_tokens(model, GEMMA4_TOKEN_IDS["<turn|>"])  # 106, as in google/gemma-4-*
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
