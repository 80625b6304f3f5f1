"""scripts/chat.py, driven with scripted input on the real Gemma 3 270M converted to GGUF.

The demo folder is converted once by the demo_gguf fixture (tests/conftest.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ftg.config import PROJECT_ROOT, load_config
from ftg.gguf_run import fit_to_context, generate_reply, open_gguf, prompt_tokens, render_prompt
from ftg.llama_runtime import open_model
from ftg.paths import BASE_GGUF, BASE_RECORD

CHAT_SCRIPT = PROJECT_ROOT / "scripts" / "chat.py"
GREEDY = ["--temperature", "0", "--max-tokens", "8"]


def greedy_reply(gguf: Path, messages: list[dict], max_tokens: int = 8) -> str:
    """The reply chat must print for `messages` (greedy, so the same tokens), computed in this process."""
    with open_gguf(gguf, n_ctx=load_config().chat.context_size) as model:
        return generate_reply(model, messages, max_tokens).strip()


def place(source: Path, target: Path) -> None:
    """Put a GGUF into a test project without copying 250 MB where a hard link works."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def run_chat(args: list[str], stdin: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHAT_SCRIPT), *args], input=stdin, capture_output=True, text=True,
                          encoding="utf-8", cwd=cwd, timeout=300)


def events(stdout: str) -> list[tuple[str, str]]:
    """The transcript after the banner as (label, text) pairs: ("you> ", what followed the prompt), ("model> ", reply)."""
    transcript = stdout[stdout.index("Type a message"):]
    parts = re.split(r"(you> |model> |base> |tuned> )", transcript)
    return [(label, text.strip()) for label, text in zip(parts[1::2], parts[2::2])]


def test_gguf_carries_the_tokenizer_folders_chat_template(demo_gguf, demo_model_dir):
    with open_model(demo_gguf, vocab_only=True) as vocab:
        assert vocab.metadata["tokenizer.chat_template"] == (demo_model_dir / "chat_template.jinja").read_text("utf-8")
        # Gemma has no system role: the embedded template puts the system text before the first user turn.
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Привет!"}]
        assert render_prompt(vocab, messages) == (
            "<bos><start_of_turn>user\nBe brief.\n\nПривет!<end_of_turn>\n<start_of_turn>model\n")


def test_chat_streams_replies_resets_and_exits(demo_gguf, project_copy):
    place(demo_gguf, project_copy / "output" / "finetuned_gemma.gguf")
    system = "Answer in one word."
    result = run_chat(["--output-dir", "output", "--system-prompt", system, *GREEDY],
                      "Hello there!\n/reset\n\n/help\nWhat is your name?\n/exit\nnever read\n", project_copy)
    assert result.returncode == 0, result.stderr
    out = result.stdout

    # The replies the model gives to the same calls in this process (greedy, so the same tokens).
    first = greedy_reply(demo_gguf, [{"role": "system", "content": system}, {"role": "user", "content": "Hello there!"}])
    # After /reset the history is gone: the second reply answers the second message alone.
    second = greedy_reply(demo_gguf, [{"role": "system", "content": system},
                                      {"role": "user", "content": "What is your name?"}])
    assert first and second

    assert f"System prompt: {system}" in out
    assert "Running on CPU" in out or "Running on GPU" in out
    assert events(out) == [
        ("you> ", ""), ("model> ", first),
        ("you> ", "(new conversation)"),
        ("you> ", ""),  # the empty line: asked again
        ("you> ", "Unknown command /help. Commands: /reset (new conversation), /exit (quit)."),
        ("you> ", ""), ("model> ", second),
        ("you> ", "Bye."),  # /exit; the line after it is never read
    ]
    assert "<end_of_turn>" not in out and "<start_of_turn>" not in out


def test_chat_keeps_the_history_without_reset(demo_gguf, project_copy):
    place(demo_gguf, project_copy / "output" / "finetuned_gemma.gguf")
    # End of input (Ctrl-D) ends the chat like /exit.
    result = run_chat(["--output-dir", "output", *GREEDY], "My name is Олег.\nWhat is my name?\n", project_copy)
    assert result.returncode == 0, result.stderr

    history = [{"role": "user", "content": "My name is Олег."}]
    first = greedy_reply(demo_gguf, history)
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": "What is my name?"}]
    second = greedy_reply(demo_gguf, history)
    assert events(result.stdout) == [("you> ", ""), ("model> ", first), ("you> ", ""), ("model> ", second),
                                     ("you> ", "Bye.")]


def test_the_same_question_after_reset_is_answered_afresh(demo_gguf, project_copy):
    """Sampled chat: reply n of the session is drawn with seed n, so asking again after /reset gives a new answer
    (every reply used seed 0 before, and the user got the same one again), and the session replays exactly."""
    place(demo_gguf, project_copy / "output" / "finetuned_gemma.gguf")
    result = run_chat(["--output-dir", "output", "--temperature", "0.9", "--max-tokens", "12"],
                      "Tell me a story.\n/reset\nTell me a story.\n", project_copy)
    assert result.returncode == 0, result.stderr
    replies = [text for label, text in events(result.stdout) if label == "model> "]
    question = [{"role": "user", "content": "Tell me a story."}]
    with open_gguf(demo_gguf, n_ctx=load_config().chat.context_size) as model:
        expected = [generate_reply(model, question, 12, 0.9, seed=n).strip() for n in (0, 1)]
    assert replies == expected and expected[0] != expected[1]


def test_compare_shows_base_then_tuned(demo_gguf, tiny_gguf, demo_model_dir, project_copy):
    output = project_copy / "output"
    # Two different models, so that each label can be checked against its own model's reply.
    place(tiny_gguf, output / "finetuned_gemma.gguf")
    # The base GGUF that ensure_base_gguf made for this base folder: chat must reuse it, not convert again.
    place(demo_gguf, output / BASE_GGUF)
    shutil.copyfile(demo_gguf.with_name(BASE_RECORD), output / BASE_RECORD)
    result = run_chat(["--output-dir", "output", "--model", str(demo_model_dir), "--compare", *GREEDY],
                      "Hi!\n/exit\n", project_copy)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "(made before from" in out and "Converting" not in out
    assert "Base model:  " in out and "Tuned model: " in out
    said = events(out)
    assert [label for label, _ in said] == ["you> ", "base> ", "tuned> ", "you> "]
    base_reply, tuned_reply = said[1][1], said[2][1]
    hi = [{"role": "user", "content": "Hi!"}]
    assert base_reply == greedy_reply(demo_gguf, hi) and tuned_reply == greedy_reply(tiny_gguf, hi)
    assert base_reply and tuned_reply and base_reply != tuned_reply


def test_missing_damaged_and_templateless_files_are_one_line_errors(project_copy):
    from download_model import demo_gguf_path

    result = run_chat(["--output-dir", "output"], "Hi\n", project_copy)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: ") and "finetuned_gemma.gguf does not exist" in last and "convert_to_gguf" in last

    (project_copy / "output" / "finetuned_gemma.gguf").write_bytes(b"GGUF but not really" * 100)
    result = run_chat(["--output-dir", "output"], "Hi\n", project_copy)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "ERROR: llama.cpp could not load" in result.stderr.strip().splitlines()[-1]

    # The demo model's source GGUF has no chat template: llama-cpp-python would silently use a Llama-2 format.
    result = run_chat(["--gguf", str(demo_gguf_path())], "Hi\n", project_copy)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "has no chat template embedded" in result.stderr.strip().splitlines()[-1]


def test_long_conversations_drop_their_oldest_turns(demo_gguf):
    llm = open_gguf(demo_gguf, n_ctx=128)
    system = [{"role": "system", "content": "Be brief."}]
    turns = []
    for number in range(40):  # about 800 tokens
        turns += [{"role": "user", "content": f"Question number {number}, please answer it."},
                  {"role": "assistant", "content": f"Answer number {number}, here it is."}]
    turns.append({"role": "user", "content": "Last question?"})
    fitted = fit_to_context(llm, system + turns, reserve=32)
    # llama.cpp rounds the context up (to 256 tokens here), so the limit is what it reports.
    assert len(prompt_tokens(llm, fitted)) <= llm.n_ctx - 32 < len(prompt_tokens(llm, system + turns))
    assert fitted[0] == system[0] and fitted[-1] == turns[-1]
    assert fitted[1]["role"] == "user" and 3 <= len(fitted) < len(turns)
    assert fitted[1:] == turns[len(turns) - (len(fitted) - 1):]  # the newest turns, in order
    llm.close()
