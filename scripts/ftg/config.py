"""Every setting of the pipeline, with its default, in one place.

Each section is a dataclass; each field has a one-line docstring right under it (shown by `--help`).
`config.yaml` at the project root mirrors these sections with EN/RU comments; `tests/test_config.py` keeps the two
in sync.

Precedence: the defaults here < config.yaml < command-line flags (`--learning-rate 1e-4`, `--me Alice --me 12345`).
Relative paths in config.yaml are relative to the project folder; relative paths on the command line are relative
to the folder you are in.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ftg.errors import UserError
from ftg.paths import PROJECT_ROOT

DEFAULT_CONFIG_FILE = PROJECT_ROOT / "config.yaml"


@dataclass
class PathsConfig:
    dataset_dir: Path = Path("dataset")
    """Folder with your chat exports (searched recursively, zip files included)."""
    data_dir: Path = Path("data")
    """Folder where prepare_dataset writes train/eval .jsonl files and its report."""
    output_dir: Path = Path("output")
    """Folder for training runs, the merged model, GGUF files and reports."""
    models_dir: Path = Path("models")
    """Folder where download_model puts base models."""


@dataclass
class ModelConfig:
    model: str = ""
    """Base model folder. Empty: the one download_model selected last (models/selected_model.json)."""


@dataclass
class DataConfig:
    format: str = "auto"
    """Input format: auto, seed, instruction, chatgpt, claude, telegram, whatsapp, discord, sharegpt, messages."""
    me: list[str] = field(default_factory=list)
    """Messenger exports: your display name(s) or account id(s), whose voice the model learns (empty: a full Telegram export's owner)."""
    mode: str = "instruct"
    """instruct: one user turn + reply per example; conversational: also growing history and sliding windows."""
    input: str = ""
    """Folder (or one file) with your chat exports, relative to the folder you run from. Empty: paths.dataset_dir."""
    output: str = ""
    """Folder for train/eval .jsonl and the report, relative to the folder you run from. Empty: paths.data_dir."""
    session_gap_hours: float = 4.0
    """Messenger history splits into separate conversations where nobody wrote for this many hours."""
    window_sizes: list[int] = field(default_factory=lambda: [2, 4])
    """conversational mode: also examples of the last N exchanges before each reply, for each N."""
    eval_fraction: float = 0.05
    """Share of conversations held out for evaluation; whole conversations, never split between train and eval."""
    split_seed: int = 42
    """Seed of the train/eval split; another value holds out other conversations."""
    max_example_tokens: int = 1024
    """Longest example in tokens, chat template included; longer ones lose their oldest turns first."""
    scrub_pii: bool = True
    """Replace e-mail addresses, phone numbers and card numbers with [EMAIL], [PHONE], [CARD]."""
    scrub_urls: bool = False
    """Also replace links with [URL] (only with scrub_pii)."""


@dataclass
class TrainConfig:
    seed: int = 42
    """Random seed for data order, LoRA init and the train/eval split."""
    learning_rate: float = 2e-4
    """Peak learning rate of the LoRA weights (cosine decay after warmup)."""
    warmup_ratio: float = 0.05
    """Fraction of the steps spent ramping the learning rate up from 0."""
    epochs: float = 3.0
    """Passes over the training data (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Stop after this many optimizer steps; 0 = use epochs."""
    micro_batch: str = "auto"
    """Conversations per forward pass: auto (from GPU memory and model size) or a number."""
    grad_accum: str = "auto"
    """Micro-batches per optimizer step: auto (about 16 conversations per step) or a number."""
    max_seq_len: str = "auto"
    """Longest sample in tokens (longer ones are cut): auto (2048 on GPU if it fits, 1024 on CPU) or a number."""
    gradient_checkpointing: str = "auto"
    """Recompute activations to save memory: auto, on or off."""
    loss_chunk_tokens: int = 1024
    """Tokens whose 262k next-token scores the loss computes at once (saves GBs); 0 = all at once, the model's own loss."""
    per_layer_embeddings_on_cpu: str = "auto"
    """Gemma-3n: keep its 4-5 GB per-layer embedding table in RAM, not on the GPU: auto (when the card needs it), on, off."""
    lora_r: int = 16
    """LoRA rank: higher learns more and uses more memory."""
    lora_alpha: int = 32
    """LoRA scaling (alpha / r multiplies the update)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input during training."""
    eval_every: int = 50
    """Evaluate, log sample replies and save a checkpoint every this many steps."""
    sample_prompts: int = 3
    """How many fixed eval prompts get a sample reply in TensorBoard at each evaluation."""
    run_name: str = ""
    """Name of the run folder under output/runs; empty = date and time."""
    resume: str = "auto"
    """auto: resume the last run if data and settings match, else start anew; new: always start anew; force: resume the last run anyway."""
    max_bad_steps: int = 3
    """Stop after this many optimizer steps in a row with a non-finite loss or gradient (each is skipped)."""
    auto_export: bool = True
    """After training, merge the adapter and write the GGUF files (merge_lora + convert)."""


@dataclass
class ExportConfig:
    quant: str = "auto"
    """Main GGUF quantization: auto (the smallest of quant_ladder that keeps your style), or force one of Q8_0, Q6_K,
    Q5_K_M, Q4_K_M, Q3_K_M (you get exactly it, with one line saying what it loses)."""
    quant_ladder: list[str] = field(default_factory=lambda: ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"])
    """quant = auto: the quants tried, smallest first; the first that keeps your style is the main file."""
    style_tolerance: float = 0.05
    """A quant keeps your style when its style distance (0-1) is at most this much above the F16 file's."""
    min_assistant_top1: float = 0.90
    """... and it picks the merged model's next token on at least this share of the reply tokens."""
    marker_tolerance: float = 0.10
    """... and, when you have a marker, it carries it in at most this share fewer replies than the F16 file."""
    style_marker: str = ""
    """Your marker (a word or emoji in your every reply); empty: found in your replies (>= 80 % share), if any."""
    ladder_conversations: int = 16
    """Conversations the ladder measures on: the held-out ones first, topped up from the training ones."""
    ladder_tokens: int = 128
    """Tokens of each conversation scored on its reply tokens."""
    ladder_greedy_replies: int = 4
    """Greedy replies of each file compared with the merged model's."""
    imatrix: bool = True
    """Quantize the K-quants (Q4_K_M, Q5_K_M, Q6_K, Q3_K_M) with an importance matrix from your training
    conversations (ftg/imatrix.py): one forward pass of the merged model over imatrix_tokens tokens."""
    imatrix_tokens: int = 4096
    """Tokens of your training conversations the importance matrix is averaged over."""
    keep_ladder: bool = False
    """Keep the ladder's other quants (finetuned_gemma-<TYPE>.gguf) beside the main file."""
    keep_f16: bool = False
    """Keep the unquantized finetuned_gemma-F16.gguf (twice the model's size in billions, in GB)."""
    extra_quants: list[str] = field(default_factory=list)
    """More GGUF types written beside the main one (finetuned_gemma-<TYPE>.gguf), e.g. Q8_0."""
    gguf_precision: str = "f16"
    """Unquantized GGUF that is checked first and quantized from: f16 or bf16."""
    max_shard_size: str = "2GB"
    """Largest safetensors file of the merged model (larger files overflow on some Windows setups)."""
    verify_gguf: bool = True
    """Check every GGUF against the merged model: load, tokenizer, next-token logits, one reply."""
    min_top1_agreement: float = 0.99
    """The unquantized GGUF must pick the same next token as the merged model at least this often, or export fails."""
    verify_prompts: int = 8
    """Held-out eval conversations used for the logit check."""
    verify_tokens: int = 64
    """Tokens per eval conversation compared in the logit check (each position costs 1 MB of RAM)."""
    reply_tokens: int = 64
    """Longest reply generated by the reply check."""
    style_report: bool = True
    """After a checked conversion, write output/report.html (base vs tuned replies and perplexity; converts the base once)."""


@dataclass
class ChatConfig:
    system_prompt: str = ""
    """Optional system text placed before the first user turn (Gemma has no system role)."""
    max_tokens: int = 512
    """Longest chat reply in tokens; the reply is cut there."""
    temperature: float = 0.7
    """Randomness of chat replies, and of the report's: 0 = always the most likely token, 1 = varied."""
    n_gpu_layers: int = -1
    """Model layers llama.cpp puts on the GPU: -1 = all, 0 = none (CPU only); ignored without GPU support."""
    context_size: int = 4096
    """Tokens the chat model sees at once (history + reply); the oldest turns are dropped beyond it."""
    report_samples: int = 10
    """Held-out conversations shown in output/report.html with the real, base and tuned replies."""
    report_reply_tokens: int = 96
    """Longest generated reply in the report (a base model often never stops on its own)."""
    report_eval_examples: int = 100
    """Held-out conversations scored for the base vs tuned perplexity in the report."""
    report_style_replies: int = 16
    """Held-out conversations both models answer for the style fingerprint (the first report_samples are shown)."""
    report_classifier_prompts: int = 16
    """Training prompts the base model answers to train the "would this pass as yours?" classifier (0 = skip it)."""


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)


SECTIONS: dict[str, type] = {
    "paths": PathsConfig,
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "export": ExportConfig,
    "chat": ChatConfig,
}


def field_docs(section_class: type) -> dict[str, str]:
    """The one-line docstring under each field, read from this file's source."""
    tree = ast.parse(inspect.getsource(section_class))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr):
            if isinstance(following.value, ast.Constant) and isinstance(following.value.value, str):
                docs[node.target.id] = following.value.value.strip()
    return docs


def _field_types(section_class: type) -> dict[str, typing.Any]:
    return typing.get_type_hints(section_class)


def _coerce(value, expected, where: str):
    """Check a value read from YAML or the command line against the field's type; convert where it is safe."""
    origin = typing.get_origin(expected)
    if expected is Path:
        if not isinstance(value, (str, Path)):
            raise UserError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if origin is list:
        (item_type,) = typing.get_args(expected)
        if value is None:
            return []
        if not isinstance(value, list):
            value = [value]
        return [_coerce(v, item_type, where) for v in value]
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if expected is float:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected a number, got {value!r}") from None
    if expected is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise UserError(f"{where}: expected a whole number, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected a whole number, got {value!r}") from None
    if expected is str:
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            raise UserError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value


def read_yaml(path: Path) -> dict:
    """Read config.yaml into {section: {key: value}}, rejecting unknown sections and keys."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {exc}. Fix the line it names, or delete the file to use defaults.")
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold sections such as 'train:' and 'data:', not {type(raw).__name__}.")
    for section, values in raw.items():
        if section not in SECTIONS:
            raise UserError(f"{path}: unknown section '{section}'. Known sections: {', '.join(SECTIONS)}.")
        known = _field_types(SECTIONS[section])
        for key in (values or {}):
            if key not in known:
                raise UserError(f"{path}: unknown key '{section}.{key}'. Known keys in '{section}': {', '.join(known)}.")
    return raw


def _make_absolute(section_obj, base: Path) -> None:
    for name, tp in _field_types(type(section_obj)).items():
        value = getattr(section_obj, name)
        if tp is Path and not value.is_absolute():
            setattr(section_obj, name, (base / value).resolve())


def load_config(config_file: Path | None = None, overrides: dict[str, dict] | None = None) -> Config:
    """Defaults < config.yaml < overrides ({section: {key: value}}, e.g. from the command line).

    Relative paths from defaults and config.yaml resolve against the project folder; relative paths in
    `overrides` resolve against the current directory.
    """
    config_file = Path(config_file) if config_file else DEFAULT_CONFIG_FILE
    cfg = Config()
    from_yaml = read_yaml(config_file) if config_file.exists() else {}
    for section, values in from_yaml.items():
        section_obj = getattr(cfg, section)
        types = _field_types(type(section_obj))
        for key, value in (values or {}).items():
            setattr(section_obj, key, _coerce(value, types[key], f"{config_file}: {section}.{key}"))
    for section in SECTIONS:
        _make_absolute(getattr(cfg, section), PROJECT_ROOT)
    for section, values in (overrides or {}).items():
        section_obj = getattr(cfg, section)
        types = _field_types(type(section_obj))
        for key, value in values.items():
            if key not in types:
                raise UserError(f"unknown setting '{section}.{key}'")
            setattr(section_obj, key, _coerce(value, types[key], f"--{key.replace('_', '-')}"))
        _make_absolute(section_obj, Path.cwd())
    return cfg


def add_config_arguments(parser: argparse.ArgumentParser, sections: list[str]) -> None:
    """Add one `--flag` per field of the given sections, with the field's docstring as help.

    Flag names are the field names with dashes; they must be unique across the sections a script uses.
    Every flag defaults to None, meaning "not given", so config.yaml keeps its say.
    """
    parser.add_argument("--config", type=Path, default=None, help="settings file (default: config.yaml)")
    for section in sections:
        group = parser.add_argument_group(f"{section} settings (config.yaml '{section}:')")
        docs = field_docs(SECTIONS[section])
        for name, tp in _field_types(SECTIONS[section]).items():
            flag = "--" + name.replace("_", "-")
            kwargs = dict(dest=f"{section}.{name}", default=None, help=docs.get(name, ""))
            if tp is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            elif typing.get_origin(tp) is list:
                group.add_argument(flag, action="append", metavar="VALUE", **kwargs)
            else:
                group.add_argument(flag, metavar=name.upper(), **kwargs)


def config_from_args(args: argparse.Namespace) -> Config:
    """Build the Config from parsed arguments made by add_config_arguments."""
    overrides: dict[str, dict] = {}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, key = dest.split(".", 1)
            overrides.setdefault(section, {})[key] = value
    return load_config(getattr(args, "config", None), overrides)


def describe(cfg: Config, sections: list[str]) -> str:
    """The resolved settings of some sections, one per line, for the start of every stage."""
    lines = []
    for section in sections:
        for key, value in dataclasses.asdict(getattr(cfg, section)).items():
            lines.append(f"  {section}.{key} = {value}")
    return "\n".join(lines)
