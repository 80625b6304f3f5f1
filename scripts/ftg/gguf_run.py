"""Running a GGUF file the way LM Studio, KoboldCpp and Ollama do: through its embedded chat template.

Used by chat (the terminal chat), report (perplexity and sample replies), the GGUF check and bench/. The runtime
itself is behind ftg.llama_runtime.

The chat template is rendered with jinja2's sandbox, the engine transformers and llama.cpp's Python bindings use for
these templates, with the same options (trim_blocks, lstrip_blocks, loop controls, raise_exception).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ftg.chat_template import ChatFormat
from ftg.errors import UserError
from ftg.llama_runtime import Model, gpu_offload_supported, open_model
from ftg.paths import GGUF_REPORT

TEMPLATE_KEY = "tokenizer.chat_template"


def open_gguf(path: Path, n_ctx: int | None = None, n_gpu_layers: int = 0, vocab_only: bool = False,
              missing_hint: str = "Run convert_to_gguf first.") -> Model:
    """Open a GGUF to talk to or to score. A missing file, one llama.cpp cannot load, and one without an embedded
    chat template are UserErrors (without a template, apps fall back to a format that Gemma never saw)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist. {missing_hint}")
    model = open_model(path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, vocab_only=vocab_only)
    if not model.metadata.get(TEMPLATE_KEY):
        model.close()
        raise UserError(f"{path} has no chat template embedded ({TEMPLATE_KEY}). Make it again with convert_only, "
                        "which embeds the model's template.")
    return model


def missing_gguf_hint(output_dir: Path) -> str:
    """What to do when output/finetuned_gemma.gguf is missing: fix a failed export (what failed, from
    gguf_report.json), or run the export."""
    import json

    report_path = Path(output_dir) / GGUF_REPORT
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = {}
    if not isinstance(report, dict) or report.get("status") != "failed":
        return "Run convert_to_gguf first (finetune_gemma runs it at the end)."
    failed = [row for row in report.get("files", []) if row.get("problems")]
    why = "; ".join(failed[0]["problems"]) if failed else "see the report"
    layout = report.get("gemma3n_layout_problems")
    advice = (" This Gemma-3n departs from the layout llama.cpp hard-codes (" + "; ".join(layout) + "): train on "
              "google/gemma-3n-E2B-it or E4B-it." if layout else
              " Fix that (train longer, or another export.gguf_precision), then run convert_only.")
    return (f"The last export FAILED its GGUF check ({why}), so no quantized file and no Modelfile were made. "
            f"The figures are in {report_path}.{advice}")


def device_description(n_gpu_layers: int) -> str:
    if not gpu_offload_supported():
        return "CPU (this llama.cpp runtime was built without GPU support)"
    if n_gpu_layers == 0:
        return "CPU (chat.n_gpu_layers = 0)"
    return "GPU, all layers" if n_gpu_layers < 0 else f"GPU, {n_gpu_layers} layers (the rest on the CPU)"


def render_prompt(model: Model, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """`messages` rendered by the chat template embedded in the GGUF: the text the runtime will tokenize."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise UserError(f"the chat template refuses this conversation: {message}")

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    template = environment.from_string(model.metadata[TEMPLATE_KEY])
    return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                           bos_token=model.detokenize([model.bos_id]), eos_token=model.detokenize([model.eos_id]),
                           raise_exception=raise_exception)


def prompt_tokens(model: Model, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    # The template writes <bos> itself, so no second one is added.
    return model.tokenize(render_prompt(model, messages, add_generation_prompt))


def generate_reply(model: Model, messages: list[dict], max_tokens: int, temperature: float = 0.0, show=None,
                   seed: int = 0) -> str:
    """The model's reply to `messages` (OpenAI-style dicts), through the GGUF's chat template.

    temperature 0 is greedy; otherwise top-k 40 / top-p 0.95 sampling, the usual chat defaults, drawn with `seed`
    (the same seed, model and messages give the same reply). The reply ends at an end-of-generation token
    (<end_of_turn>, <turn|>) or after max_tokens. show(text) gets each new piece as it arrives; a character split over
    two tokens is shown once it is whole.
    """
    tokens, shown = [], ""
    sampling = {"temperature": temperature, "top_k": 40, "top_p": 0.95, "seed": seed} if temperature > 0 else {}
    for token in model.generate(prompt_tokens(model, messages), max_tokens, **sampling):
        tokens.append(token)
        text = model.detokenize(tokens)
        if show and not text.endswith("\ufffd"):  # U+FFFD: the first bytes of a character still to come
            show(text[len(shown):])
            shown = text
    return model.detokenize(tokens)


def fit_to_context(model: Model, messages: list[dict], reserve: int) -> list[dict]:
    """Drop the oldest user/model exchanges (never the system text or the last message) until the prompt leaves
    `reserve` tokens of the context for the reply."""
    limit = model.n_ctx - reserve
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(head):]
    while len(turns) > 1 and len(prompt_tokens(model, head + turns)) > limit:
        turns = turns[2:]
    return head + turns


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """log-softmax over the last axis in float64 (so that KL of two equal distributions is 0, not float32 noise)."""
    scores = np.asarray(scores, dtype=np.float64)
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def chat_format(model: Model) -> ChatFormat:
    """The turn format of the chat template embedded in the GGUF (end-of-turn token, generation prompt, tags)."""
    return ChatFormat.from_renderer(lambda messages, add: render_prompt(model, messages, add),
                                    model.metadata[TEMPLATE_KEY], model.detokenize([model.bos_id]),
                                    model.detokenize([model.eos_id]), lambda tag: len(model.tokenize(tag)) == 1)


def split_reply(model: Model, messages: list[dict]) -> tuple[list[int], list[int], list[int]]:
    """(prompt, reply words, stop) token ids of a conversation whose last message is the reply to score.

    The prompt is the conversation without its last message plus the generation prompt (Gemma 4's ends with an empty
    thinking channel); the reply is its text as the template writes it, then the end-of-turn token. The newline
    after that token is never generated (generation stops at the end of the turn), so it is not scored.
    """
    fmt = chat_format(model)
    try:
        prompt_text, words_text = fmt.reply_parts(lambda part, add: render_prompt(model, part, add), messages)
    except ValueError:
        raise UserError("the GGUF's chat template renders a reply unlike its generation prompt; make the GGUF again "
                        "with convert_only") from None
    return model.tokenize(prompt_text), model.tokenize(words_text), model.tokenize(fmt.end_of_turn)


def reply_perplexity(gguf: Path, conversations: list[list[dict]], n_gpu_layers: int = -1, desc: str = "") -> dict:
    """Perplexity of a GGUF on the last (assistant) reply of each conversation; the turns before it are context.

    Returns {"perplexity": on the reply's words, "perplexity_with_stop": also scoring its end-of-turn token,
    "mean_nll": nats per word token, "tokens": word tokens scored, "conversations"}.
    The words are the headline: a base model gives <end_of_turn> a probability near e^-30, so that one token would
    dominate the mean and any tuned model would look far better (the GGUF check tests stopping on its own).
    """
    with open_gguf(gguf, vocab_only=True, missing_hint="Make it with convert_to_gguf.") as vocab:
        sequences = [split_reply(vocab, messages) for messages in conversations]
    n_ctx = max(len(prompt) + len(words) + len(stop) for prompt, words, stop in sequences)
    words_nll = stop_nll = 0.0
    words_count = stop_count = 0
    with open_gguf(gguf, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers) as model:
        for prompt, words, stop in tqdm(sequences, desc=desc or f"perplexity {gguf.name}", unit="conv"):
            reply = words + stop
            # Row i of the logits predicts token i + 1: the reply's tokens are predicted by the rows before them.
            log_probs = log_softmax(model.logits(prompt + reply)[len(prompt) - 1: -1])
            nll = -log_probs[np.arange(len(reply)), reply]
            words_nll, words_count = words_nll + float(nll[: len(words)].sum()), words_count + len(words)
            stop_nll, stop_count = stop_nll + float(nll[len(words):].sum()), stop_count + len(stop)
    if words_count == 0:
        raise UserError(f"the held-out replies are all empty; there is nothing to score with {gguf.name}.")
    return {"perplexity": math.exp(words_nll / words_count),
            "perplexity_with_stop": math.exp((words_nll + stop_nll) / (words_count + stop_count)),
            "mean_nll": words_nll / words_count, "tokens": words_count, "conversations": len(sequences)}


def sample_replies(gguf: Path, conversations: list[list[dict]], chat_cfg, desc: str = "") -> list[str]:
    """Replies of a GGUF to each conversation without its last message (at most chat.report_reply_tokens), sampled
    as chat samples them (chat.temperature; 0 = greedy), reply i with seed i.

    Why sampled: the style is measured the way you will hear it. Greedy decoding always takes the single likeliest
    token, so a person who starts 3 replies in 10 with "ахах" gets it in every reply, and small models fall into
    loops ("ахах\nахах\n...") that chat at temperature 0.7 does not show. The fixed seeds keep the report the same
    each time it is made from the same files, and give two models the same draws."""
    replies = []
    with open_gguf(gguf, n_ctx=chat_cfg.context_size, n_gpu_layers=chat_cfg.n_gpu_layers) as model:
        reserve = min(chat_cfg.report_reply_tokens, model.n_ctx // 2)
        for number, messages in enumerate(tqdm(conversations, desc=desc or f"replies {gguf.name}", unit="reply")):
            prompt = fit_to_context(model, messages[:-1], reserve)
            replies.append(generate_reply(model, prompt, chat_cfg.report_reply_tokens, chat_cfg.temperature,
                                          seed=number).strip())
    return replies
