"""Talk to your fine-tuned model in the terminal.

Reads:   output/finetuned_gemma.gguf (written by convert), or --gguf FILE. With --compare also the base model folder
         (--model, else the one output/merged/merge.json names, else the one download_model selected).
Writes:  only for --compare: output/base_model.gguf, the base model converted once to the same quant type as the
         tuned file, and base_model.json, which says what it was made from (it is reused while that is unchanged).

The chat goes through llama-cpp-python and the chat template embedded in the GGUF, as LM Studio and Ollama use it.
Replies stream as they are written. Type /reset to start a new conversation, /exit (or Ctrl-D) to quit; Ctrl-C
stops a reply midway. The optional system prompt (chat.system_prompt) goes in front of your first message, since
Gemma has no system role. When a conversation outgrows chat.context_size, its oldest turns are dropped.

Run:
    chat.bat / ./chat.sh
    python scripts/chat.py --compare                         base reply, then tuned reply, to every message
    python scripts/chat.py --system-prompt "Answer briefly." --temperature 0
    python scripts/chat.py --gguf output/finetuned_gemma-Q8_0.gguf
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from ftg.config import add_config_arguments, config_from_args, describe
from ftg.errors import UserError, run_main
from ftg.files import check_free_space, write_json
from ftg.models import resolve_model_dir

TUNED_FILE = "finetuned_gemma.gguf"
"""The main GGUF that convert writes (convert.MAIN_FILE)."""
BASE_FILE = "base_model.gguf"
BASE_RECORD = "base_model.json"
USER_LABEL = "you> "
MODEL_LABEL = "model> "
BASE_LABEL = "base> "
TUNED_LABEL = "tuned> "
SECTIONS = ["paths", "model", "export", "chat"]


# ----------------------------------------------------------------------------------------------------------------
# Loading a GGUF and talking to it (also used by report.py and bench/style_acceptance.py)
# ----------------------------------------------------------------------------------------------------------------


def load_model(path: Path, chat_cfg, n_ctx: int | None = None, missing_hint: str = "Run convert_to_gguf first."):
    """Open a GGUF with llama.cpp, offloading chat.n_gpu_layers to the GPU where llama-cpp-python supports it.

    A missing file, a file llama.cpp cannot load and a GGUF without an embedded chat template are UserErrors (without
    a template, llama-cpp-python would silently fall back to a Llama-2 format that Gemma never saw).
    """
    from llama_cpp import Llama

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist. {missing_hint}")
    try:
        llm = Llama(model_path=str(path), n_ctx=n_ctx or chat_cfg.context_size, n_gpu_layers=chat_cfg.n_gpu_layers,
                    verbose=False)
    except ValueError as exc:  # llama-cpp-python's way of saying the model or its context could not be made
        raise UserError(f"llama.cpp could not load {path} ({exc}). The file is damaged or is not a GGUF model: "
                        "make it again with convert_only, or lower chat.context_size if memory ran out.") from None
    if not llm.metadata.get("tokenizer.chat_template"):
        llm.close()
        raise UserError(f"{path} has no chat template embedded (tokenizer.chat_template). Make it again with "
                        "convert_only, which embeds Gemma's template.")
    return llm


def device_description(n_gpu_layers: int) -> str:
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        return "CPU (this llama-cpp-python was built without GPU support)"
    if n_gpu_layers == 0:
        return "CPU (chat.n_gpu_layers = 0)"
    return "GPU, all layers" if n_gpu_layers < 0 else f"GPU, {n_gpu_layers} layers (the rest on the CPU)"


def render_prompt(llm, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """`messages` rendered by the chat template embedded in the GGUF (the text llama.cpp will tokenize)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    bos = llm.detokenize([llm.token_bos()], special=True).decode("utf-8")
    eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8")
    formatter = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], eos_token=eos, bos_token=bos,
                                    add_generation_prompt=add_generation_prompt)
    return formatter(messages=messages).prompt


def prompt_tokens(llm, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    # The template writes <bos> itself, so no second one is added here.
    text = render_prompt(llm, messages, add_generation_prompt)
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def generate_reply(llm, messages: list[dict], max_tokens: int, temperature: float = 0.0, show=None) -> str:
    """The model's reply to `messages` (OpenAI-style dicts), through the GGUF's chat template.

    temperature 0 is greedy, so the reply is repeatable. The reply ends at <end_of_turn> (an end-of-generation token
    in llama.cpp) or after max_tokens. show(text) is called with each piece as it arrives.
    """
    pieces = []
    stream = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=temperature,
                                        stream=True)
    try:
        for chunk in stream:
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:
                pieces.append(piece)
                if show:
                    show(piece)
    finally:
        stream.close()  # on Ctrl-C: release llama.cpp's generator before the next reply
    return "".join(pieces)


def fit_to_context(llm, messages: list[dict], reserve: int) -> list[dict]:
    """Drop the oldest user/model exchanges (never the system text or the last message) until the prompt leaves
    `reserve` tokens of the context for the reply."""
    limit = llm.n_ctx() - reserve
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(head):]
    while len(turns) > 1 and len(prompt_tokens(llm, head + turns)) > limit:
        turns = turns[2:]
    return head + turns


# ----------------------------------------------------------------------------------------------------------------
# The base model as a GGUF, for --compare and the report
# ----------------------------------------------------------------------------------------------------------------


def base_model_dir(cfg) -> Path:
    """The base of the tuned model: --model when given, else the base that merge_lora merged into, else the one
    download_model selected."""
    merge_record = cfg.paths.output_dir / "merged" / "merge.json"
    if not cfg.model.model and merge_record.exists():
        base = Path(json.loads(merge_record.read_text(encoding="utf-8"))["base_model"])
        if not (base / "config.json").exists():
            raise UserError(f"the base model {base} (named in {merge_record}) is gone. Put it back (download_model) "
                            "or pass --model FOLDER.")
        return base
    return resolve_model_dir(cfg)


def folder_fingerprint(folder: Path) -> str:
    """Name, size and modification time of the model files: changes when the folder's model changes (cheap to read,
    unlike hashing gigabytes)."""
    listing = [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
               for p in sorted(folder.iterdir()) if p.suffix in (".json", ".safetensors", ".jinja", ".model")]
    return hashlib.sha256(json.dumps(listing).encode("utf-8")).hexdigest()[:16]


def ensure_base_gguf(cfg, base_dir: Path | None = None) -> Path:
    """output/base_model.gguf: the base model converted once to export.quant, like the tuned main file, so the two
    compare fairly. Reused while base_model.json matches the base folder and the quant type."""
    import convert  # the export stage's converter and quantizer, so both GGUFs are made the same way

    base_dir = Path(base_dir or base_model_dir(cfg)).resolve()
    quant = convert.normalize_quants(cfg.export.quant, [])[0]
    precision = cfg.export.gguf_precision.lower()
    output_dir = cfg.paths.output_dir
    target = output_dir / BASE_FILE
    record_path = output_dir / BASE_RECORD
    record = {"base_model": str(base_dir), "fingerprint": folder_fingerprint(base_dir), "quant": quant,
              "precision": precision}
    if target.exists() and record_path.exists():
        try:
            if json.loads(record_path.read_text(encoding="utf-8")) == record:
                print(f"Base model GGUF: {target} (made before from {base_dir})")
                return target
        except (OSError, json.JSONDecodeError):
            pass  # a damaged record: convert again
    output_dir.mkdir(parents=True, exist_ok=True)
    n_params = convert.count_parameters(base_dir)
    # 2 bytes per weight for the temporary f16/bf16 file + bits/8 per weight for the quant, 5% margin for metadata.
    check_free_space(output_dir, int(n_params * (2 + convert.QUANTS[quant][1] / 8) * 1.05), "the base model GGUF")
    print(f"Converting the base model {base_dir} to GGUF ({quant}), once, to compare it with the tuned model...")
    record_path.unlink(missing_ok=True)
    full = convert.convert_to_gguf_file(base_dir, output_dir / f"base_model-{precision.upper()}.gguf", precision,
                                        n_params)
    try:
        convert.quantize(full, target, quant)
    finally:
        full.unlink(missing_ok=True)
    write_json(record_path, record)
    print(f"Base model GGUF: {target}")
    return target


# ----------------------------------------------------------------------------------------------------------------
# The terminal chat
# ----------------------------------------------------------------------------------------------------------------


def stream_reply(llm, messages: list[dict], chat_cfg) -> str:
    """Print the reply as it is generated; Ctrl-C stops it and keeps what was written."""
    pieces = []

    def show(piece: str) -> None:
        pieces.append(piece)
        print(piece, end="", flush=True)

    try:
        generate_reply(llm, messages, chat_cfg.max_tokens, chat_cfg.temperature, show)
    except KeyboardInterrupt:
        print(" [stopped]", end="")
    print()
    return "".join(pieces).strip()


def chat_loop(models: list[tuple[str, object]], chat_cfg, read=input) -> None:
    """Read messages with `read` until /exit or end of input; each model answers in turn and keeps its own history.

    models: (label, Llama) pairs, e.g. [("model> ", llm)] or [("base> ", base), ("tuned> ", tuned)].
    """
    system = [{"role": "system", "content": chat_cfg.system_prompt}] if chat_cfg.system_prompt.strip() else []
    histories = {label: [] for label, _ in models}
    while True:
        try:
            text = read(USER_LABEL).strip()
        except (EOFError, KeyboardInterrupt):
            print()
            break
        if not text:
            continue
        command = text.lower()
        if command in ("/exit", "/quit"):
            break
        if command == "/reset":
            histories = {label: [] for label, _ in models}
            print("(new conversation)")
            continue
        if command.startswith("/") and " " not in command:
            print(f"Unknown command {text}. Commands: /reset (new conversation), /exit (quit).")
            continue
        for label, llm in models:
            # Keep room for a whole reply, but never more than half the context for it.
            reserve = min(chat_cfg.max_tokens, llm.n_ctx() // 2)
            messages = fit_to_context(llm, system + histories[label] + [{"role": "user", "content": text}], reserve)
            if len(prompt_tokens(llm, messages)) > llm.n_ctx() - reserve:
                print(f"(this message is too long for the context of {llm.n_ctx()} tokens: shorten it, or raise "
                      "chat.context_size)")
                break
            dropped = len(system) + len(histories[label]) + 1 - len(messages)
            if dropped:
                print(f"(the oldest {dropped} messages were dropped to fit the context of {llm.n_ctx()} tokens)")
            print(label, end="", flush=True)
            reply = stream_reply(llm, messages, chat_cfg)
            histories[label] = messages[len(system):] + [{"role": "assistant", "content": reply}]
    print("Bye.")


def run(cfg, gguf: Path | None = None, compare: bool = False, read=input) -> Path:
    """Chat with the tuned GGUF (and the base model's GGUF with compare) until /exit; returns the tuned GGUF."""
    chat_cfg = cfg.chat
    gguf = Path(gguf) if gguf else cfg.paths.output_dir / TUNED_FILE
    models = [(TUNED_LABEL if compare else MODEL_LABEL, load_model(gguf, chat_cfg))]
    print(f"Tuned model: {gguf}")
    if compare:  # the tuned file is checked first: converting the base is wasted when it is missing
        base = ensure_base_gguf(cfg)
        models.insert(0, (BASE_LABEL, load_model(base, chat_cfg, missing_hint="Run chat --compare again.")))
        print(f"Base model:  {base}")
    print(f"Running on {device_description(chat_cfg.n_gpu_layers)}; context {chat_cfg.context_size} tokens, replies "
          f"up to {chat_cfg.max_tokens} tokens, temperature {chat_cfg.temperature:g}.")
    if chat_cfg.system_prompt.strip():
        print(f"System prompt: {chat_cfg.system_prompt}")
    print("Type a message and press Enter. /reset starts a new conversation, /exit quits.\n")
    try:
        chat_loop(models, chat_cfg, read)
    finally:
        for _, llm in models:
            llm.close()
    return gguf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=None, help=f"GGUF file to talk to (default: output/{TUNED_FILE})")
    parser.add_argument("--compare", action="store_true",
                        help="show the base model's reply, then the tuned model's, to each message")
    add_config_arguments(parser, SECTIONS)
    args = parser.parse_args(argv)

    def body() -> int:
        cfg = config_from_args(args)
        print("Settings:\n" + describe(cfg, ["chat"]))
        run(cfg, args.gguf, args.compare)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
