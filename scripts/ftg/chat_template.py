"""Gemma's chat format, as Google ships it in the instruction-tuned checkpoints' tokenizer_config.json.

The base (pretrained) checkpoints, and the demo model built from a GGUF, come without a chat template, so we set
this one: the fine-tuned model then speaks the same format as Gemma's -it models, and llama.cpp, LM Studio and
Ollama read it from the GGUF metadata.

Gemma has no system role: the template puts the system text and a blank line in front of the first user turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

END_OF_TURN = "<end_of_turn>"
"""Gemma 3 / 3n's end-of-turn token (id 106). Only the fallback template's; everything else asks ChatFormat."""

PROBE_USER = "Q"
PROBE_REPLY = "A"
PROBE_SYSTEM = "S"
"""One-letter probe turns: rendered by the model's template, they show where its headers and end markers are."""


def ensure_chat_template(tokenizer) -> None:
    """Give the tokenizer Gemma's chat template when it has none (base checkpoints, GGUF-built folders)."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE


@dataclass(frozen=True)
class ChatFormat:
    """A model's turn format, read off its own chat template by rendering probe conversations.

    Gemma 3 / 3n: model_header "<start_of_turn>model\n", end_of_turn "<end_of_turn>", no thinking prefix.
    Gemma 4:      model_header "<|turn>model\n", end_of_turn "<turn|>", and the generation prompt adds an empty
                  thinking channel "<|channel>thought\n<channel|>" that a rendered past reply does not have.
    """

    user_header: str
    """What opens a user turn, e.g. "<start_of_turn>user\n"."""
    model_header: str
    """What opens a model turn in a rendered conversation, e.g. "<|turn>model\n"."""
    generation_extra: str
    """What the generation prompt adds after model_header (Gemma 4: the empty thinking channel; else "")."""
    end_of_turn: str
    """The token that closes a turn and on which generation stops: "<end_of_turn>" or "<turn|>"."""
    after_turn: str
    """What follows end_of_turn in a rendered conversation (a newline); never generated, never trained."""
    system_header: str
    """What opens a separate system turn ("<|turn>system\n"), or "" when the system text goes into the first user
    turn (Gemma 3)."""
    tags: tuple[str, ...]
    """Template tags that must never reach the user: every special token the template writes, thinking tags too."""

    @property
    def generation_prompt(self) -> str:
        return self.model_header + self.generation_extra

    @classmethod
    def from_renderer(cls, render, template_source: str, bos: str, eos: str, is_one_token) -> "ChatFormat":
        """Read the format off render(messages, add_generation_prompt) -> text, a tokenizer's or a GGUF's template.

        template_source: the template's text; every <tag> in it that is_one_token(tag) becomes one of `tags`, so
        thinking and tool tags count even when a plain chat never renders them.
        """
        from ftg.errors import UserError

        user = [{"role": "user", "content": PROBE_USER}]
        try:
            history = render(user, False)
            prompt = render(user, True)
            full = render(user + [{"role": "assistant", "content": PROBE_REPLY}], False)
            with_system = render([{"role": "system", "content": PROBE_SYSTEM}] + user, False)
        except Exception as exc:  # a template that refuses two plain turns cannot be trained on
            raise UserError(f"the model's chat template cannot render a plain user/assistant chat ({exc}).") from None
        if not (prompt.startswith(history) and full.startswith(history)):
            raise UserError("the model's chat template does not render a conversation as a growing text; this "
                            "pipeline needs a Gemma-style template.")
        header, found, rest = full[len(history):].partition(PROBE_REPLY)  # "<start_of_turn>model\n", "A", "<end_..."
        generation = prompt[len(history):]
        if not found or not generation.startswith(header):
            raise UserError(f"the model's chat template writes a reply ({full[len(history):]!r}) unlike its "
                            f"generation prompt ({generation!r}); this pipeline needs a Gemma-style template.")
        end = rest.rstrip("\n")
        user_header = history[: history.index(PROBE_USER)].removeprefix(bos)
        system_at = with_system.find(PROBE_SYSTEM)
        # Gemma 4 writes "<|turn>system\nS<turn|>"; Gemma 3 folds the system text into the first user turn.
        own_turn = system_at >= 0 and with_system[system_at + len(PROBE_SYSTEM):].startswith(end)
        system_header = with_system[:system_at].removeprefix(bos) if own_turn else ""
        tags = {tag for tag in re.findall(r"<[^<>\s]{1,40}>", template_source) if is_one_token(tag)}
        tags |= {t for t in (bos, eos, end) if t}
        return cls(user_header=user_header, model_header=header, generation_extra=generation[len(header):],
                   end_of_turn=end, after_turn=rest[len(end):], system_header=system_header, tags=tuple(sorted(tags)))

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "ChatFormat":
        """The format of a Hugging Face tokenizer's chat template (Gemma's when it has none)."""
        ensure_chat_template(tokenizer)

        def render(messages, add_generation_prompt):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

        def is_one_token(tag):
            ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
            return len(ids) == 1 and ids[0] != tokenizer.unk_token_id

        return cls.from_renderer(render, tokenizer.chat_template, tokenizer.bos_token or "", tokenizer.eos_token or "",
                                 is_one_token)

    def end_of_turn_id(self, tokenizer) -> int:
        """The end-of-turn token's id in `tokenizer`; a template whose end marker is no single token is refused."""
        from ftg.errors import UserError

        token_id = tokenizer.convert_tokens_to_ids(self.end_of_turn)
        if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
            raise UserError(f"the chat template ends a turn with {self.end_of_turn!r}, which is not one token of the "
                            "model's vocabulary; the model could not learn to stop.")
        return token_id

    def turn_token_ids(self, tokenizer) -> list[int]:
        """Ids of the special tokens that open and close turns ("<start_of_turn>", "<end_of_turn>"; Gemma 4's
        "<|turn>", "<turn|>"): the tokens a fine-tune must teach the model to read and, for the end of turn, to
        emit. The beginning-of-text token is left out: it is no part of a turn. Markers that are no single token of
        the vocabulary (a stand-in tokenizer's) have no row to train and are left out too."""
        markers = self.user_header + self.model_header + self.end_of_turn
        found = [tag for tag in self.tags if tag in markers and tag != tokenizer.bos_token]
        ids = {tokenizer.convert_tokens_to_ids(tag) for tag in found}
        return sorted(i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id)

    def reply_parts(self, render, messages: list[dict]) -> tuple[str, str]:
        """(prompt text, reply text) of a conversation whose last message is the model's reply: the prompt is what
        the generation prompt renders (what an app sends), the reply is the reply's text as the template writes it
        (trimmed, thinking stripped), without the end-of-turn token."""
        prompt = render(messages[:-1], True)
        history = render(messages[:-1], False)
        turn = render(messages, False)[len(history):]
        if not turn.startswith(self.model_header) or not turn.rstrip("\n").endswith(self.end_of_turn):
            raise ValueError("the chat template renders this reply unlike its other replies")
        return prompt, turn[len(self.model_header):].rstrip("\n")[: -len(self.end_of_turn)]

    def ollama_template(self) -> str:
        """This format in Ollama's Go template language (as Ollama's own gemma3 / gemma4 models write it)."""
        end = self.end_of_turn + self.after_turn
        if self.system_header:
            # no "{{-" after the turn: it would trim the newline that belongs to it
            system = f'{{{{- if eq .Role "system" }}}}{self.system_header}{{{{ .Content }}}}{end}{{{{ else if eq .Role "user" }}}}'
        else:  # Gemma 3 has no system role: the system text is sent as a user turn
            system = '{{- if or (eq .Role "user") (eq .Role "system") }}'
        return ("{{- range $i, $_ := .Messages }}\n"
                "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
                f"{system}{self.user_header}{{{{ .Content }}}}{end}"
                f"{{{{ if $last }}}}{self.generation_prompt}{{{{ end }}}}\n"
                f'{{{{- else if eq .Role "assistant" }}}}{self.model_header}{{{{ .Content }}}}'
                f"{{{{ if not $last }}}}{end}{{{{ end }}}}\n"
                "{{- end }}\n"
                "{{- end }}")
