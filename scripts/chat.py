"""Talk to your fine-tuned model in the terminal.

Reads:   output/finetuned_gemma.gguf (written by convert), or --gguf FILE. With --compare also the base model folder
         (--model, else the one output/merged/merge.json names, else the one download_model selected).
Writes:  only for --compare: output/base_model.gguf, the base model converted once to the same quant type as the
         tuned file, and base_model.json, which says what it was made from (it is reused while that is unchanged).

The chat goes through llama.cpp (ftg/gguf_run.py) and the chat template embedded in the GGUF, as LM Studio and
Ollama use it.
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
import sys
from pathlib import Path

from ftg.config import add_config_arguments, config_from_args, describe
from ftg.errors import run_main
from ftg.gguf_make import ensure_base_gguf
from ftg.gguf_run import device_description, fit_to_context, generate_reply, missing_gguf_hint, open_gguf, prompt_tokens
from ftg.paths import MAIN_GGUF

USER_LABEL = "you> "
MODEL_LABEL = "model> "
BASE_LABEL = "base> "
TUNED_LABEL = "tuned> "
SECTIONS = ["paths", "model", "export", "chat"]


# ----------------------------------------------------------------------------------------------------------------
# The terminal chat
# ----------------------------------------------------------------------------------------------------------------


def stream_reply(llm, messages: list[dict], chat_cfg, seed: int = 0) -> str:
    """Print the reply as it is generated (sampled with `seed`); Ctrl-C stops it and keeps what was written."""
    pieces = []

    def show(piece: str) -> None:
        pieces.append(piece)
        print(piece, end="", flush=True)

    try:
        generate_reply(llm, messages, chat_cfg.max_tokens, chat_cfg.temperature, show, seed)
    except KeyboardInterrupt:
        print(" [stopped]", end="")
    print()
    return "".join(pieces).strip()


def chat_loop(models: list[tuple[str, object]], chat_cfg, read=input) -> None:
    """Read messages with `read` until /exit or end of input; each model answers in turn and keeps its own history.

    models: (label, model) pairs of open GGUFs, e.g. [("model> ", tuned)] or [("base> ", base), ("tuned> ", tuned)].
    """
    system = [{"role": "system", "content": chat_cfg.system_prompt}] if chat_cfg.system_prompt.strip() else []
    histories = {label: [] for label, _ in models}
    # Reply n of the session is sampled with seed n: the same question asked again after /reset gets a new answer,
    # as in any chat app, while a session typed again replays the same (and base and tuned draw alike in --compare).
    answered = 0
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
            reserve = min(chat_cfg.max_tokens, llm.n_ctx // 2)
            messages = fit_to_context(llm, system + histories[label] + [{"role": "user", "content": text}], reserve)
            if len(prompt_tokens(llm, messages)) > llm.n_ctx - reserve:
                print(f"(this message is too long for the context of {llm.n_ctx} tokens: shorten it, or raise "
                      "chat.context_size)")
                break
            dropped = len(system) + len(histories[label]) + 1 - len(messages)
            if dropped:
                print(f"(the oldest {dropped} messages were dropped to fit the context of {llm.n_ctx} tokens)")
            print(label, end="", flush=True)
            reply = stream_reply(llm, messages, chat_cfg, seed=answered)
            histories[label] = messages[len(system):] + [{"role": "assistant", "content": reply}]
        answered += 1
    print("Bye.")


def run(cfg, gguf: Path | None = None, compare: bool = False, read=input) -> Path:
    """Chat with the tuned GGUF (and the base model's GGUF with compare) until /exit; returns the tuned GGUF."""
    chat_cfg = cfg.chat
    gguf = Path(gguf) if gguf else cfg.paths.output_dir / MAIN_GGUF
    hint = missing_gguf_hint(cfg.paths.output_dir)
    models = [(TUNED_LABEL if compare else MODEL_LABEL, open_gguf(gguf, chat_cfg.context_size, chat_cfg.n_gpu_layers,
                                                                   missing_hint=hint))]
    print(f"Tuned model: {gguf}")
    if compare:  # the tuned file is checked first: converting the base is wasted when it is missing
        base = ensure_base_gguf(cfg)
        models.insert(0, (BASE_LABEL, open_gguf(base, chat_cfg.context_size, chat_cfg.n_gpu_layers,
                                                missing_hint="Run chat --compare again.")))
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
    parser.add_argument("--gguf", type=Path, default=None, help=f"GGUF file to talk to (default: output/{MAIN_GGUF})")
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
