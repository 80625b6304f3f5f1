"""scripts/report.py: one self-contained HTML page, made from whatever the earlier stages left, on the real 270M."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

import report
from ftg.config import load_config
from ftg.gguf_run import reply_perplexity
from ftg.paths import BASE_GGUF, BASE_RECORD, TRAIN_FILE
from test_chat import place

EVAL_CONVERSATIONS = [
    [{"role": "user", "content": "Hi! How are you?"},
     {"role": "assistant", "content": "Good, thanks & you? <script>alert('x')</script> — Bob"}],
    [{"role": "system", "content": "You are Bob."}, {"role": "user", "content": "Привет, как дела?"},
     {"role": "assistant", "content": "Нормально, работаю. — Bob"}],
    [{"role": "user", "content": "Plans for today?"}, {"role": "assistant", "content": "Coding."},
     {"role": "user", "content": "What language?"}, {"role": "assistant", "content": "Python, as always. — Bob"}],
]


def write_data_file(data_dir, conversations, extra_lines=(), name="eval_dataset.jsonl"):
    with open(data_dir / name, "w", encoding="utf-8") as handle:
        for number, messages in enumerate(conversations):
            handle.write(json.dumps({"messages": messages, "conversation_id": f"c{number}", "source": "test"},
                                    ensure_ascii=False) + "\n")
        for line in extra_lines:
            handle.write(line + "\n")


def write_training_run(output_dir):
    """A run folder as finetune_gemma leaves it: run.json and TensorBoard scalars under the Trainer's tags."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir = output_dir / "runs" / "test-run"
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    for step in range(1, 21):
        writer.add_scalar("train/loss", 3.0 - 0.1 * step, step)
    for step in (0, 10, 20):
        writer.add_scalar("eval/loss", 3.2 - 0.05 * step, step)
    writer.close()
    (run_dir / "run.json").write_text(json.dumps({
        "run_name": "test-run", "base_model": "/models/gemma", "status": "finished", "best_step": 20,
        "best_eval_loss": 2.2, "last_step": 20}), encoding="utf-8")
    (output_dir / "runs" / "latest_run.txt").write_text("test-run", encoding="utf-8")


class PageCheck(HTMLParser):
    """Collects what a browser would fetch from outside the file."""

    def __init__(self):
        super().__init__()
        self.external, self.images, self.scripts = [], 0, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key) and not attrs[key].startswith("data:"):
                self.external.append(f"{tag} {key}={attrs[key]}")
        self.images += tag == "img" and attrs.get("src", "").startswith("data:image/png;base64,")
        self.scripts += tag == "script"


@pytest.fixture(scope="module")
def made_report(demo_gguf, demo_model_dir, tmp_path_factory):
    """output/report.html made by report.main from every input a real run leaves (the demo GGUF as both models)."""
    project = tmp_path_factory.mktemp("report") / "отчёт с пробелом"
    data_dir, output_dir = project / "data", project / "output"
    data_dir.mkdir(parents=True)
    bad_lines = ["not json", '{"messages": [{"role": "user", "content": "x"}]}']
    write_data_file(data_dir, EVAL_CONVERSATIONS, bad_lines)
    write_data_file(data_dir, EVAL_CONVERSATIONS, bad_lines, TRAIN_FILE)  # the classifier's training lines
    (data_dir / "prepare_report.json").write_text(json.dumps({
        "input": "dataset", "mode": "instruct", "files_read": 2, "files_failed": [{"file": "bad<1>.json",
        "problem": "not JSON"}], "formats": {"telegram": 1, "chatgpt": 1}, "conversations": 30,
        "conversations_train": 27, "conversations_eval": 3, "messages_read": 500, "messages_used": 480,
        "messages_skipped": {"media only": 20}, "pii_replaced": {"email": 3}, "examples_train": 120,
        "examples_eval": 3, "examples_duplicate_dropped": 4, "token_lengths": {"max": 300, "mean": 80.5, "p95": 200,
        "limit": 1024}}), encoding="utf-8")
    write_training_run(output_dir)
    place(demo_gguf, output_dir / "finetuned_gemma.gguf")
    place(demo_gguf, output_dir / BASE_GGUF)
    (output_dir / BASE_RECORD).write_bytes(demo_gguf.with_name(BASE_RECORD).read_bytes())
    (output_dir / "gguf_report.json").write_text(json.dumps({
        "status": "passed", "min_top1_agreement": 0.99,
        "reference": {"source": "data/eval_dataset.jsonl", "conversations": 3, "positions": 150},
        "files": [{"file": str(output_dir / "finetuned_gemma-F16.gguf"), "type": "F16", "size_bytes": 543_000_000,
                   "load": True, "tokenizer": {"ok": True}, "logits": {"top1_agreement": 0.9987, "mean_kl": 0.00012},
                   "reply": {"ok": True, "text": "Fine <b>thanks</b>"}, "problems": []}]}), encoding="utf-8")

    exit_code = report.main(["--data-dir", str(data_dir), "--output-dir", str(output_dir), "--model",
                             str(demo_model_dir), "--report-samples", "2", "--report-reply-tokens", "8",
                             "--report-eval-examples", "3"])
    assert exit_code == 0
    return output_dir / "report.html"


@pytest.mark.slow  # made_report samples replies from the 270M GGUF twice (~60 s); the fast loop's tiny family test runs report
def test_report_shows_every_part_in_one_offline_page(made_report):
    output_dir = made_report.parent
    page = (output_dir / "report.html").read_text(encoding="utf-8")
    check = PageCheck()
    check.feed(page)
    assert check.external == [] and check.scripts == 0
    assert check.images == 3  # the style habits, the perplexity bars and the loss curves
    # Every text from the data is escaped: the <script> in a real reply shows as text.
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page and "<b>thanks" not in page
    assert "Fine &lt;b&gt;thanks&lt;/b&gt;" in page
    # The verdict leads the page, in plain words, before any table.
    verdict = re.search(r"<p><b>(Your replies average \d+ words, the base model&#x27;s \d+, the tuned model&#x27;s \d+\."
                        r".*?)</b></p>", page)
    assert verdict and page.index(verdict.group(0)) < page.index("<table")
    assert page.count(verdict.group(1)) == 1, "the verdict is said once, at the top (it was printed twice)"
    figures = json.loads((output_dir / "report.json").read_text(encoding="utf-8"))
    assert figures["summary"] == html.unescape(verdict.group(1)) == figures["style"]["verdict"]
    # Base and tuned are the same file here: the same replies, so the same distance to the person's.
    assert figures["style"]["distance"]["base"] == figures["style"]["distance"]["tuned"] > 0
    assert figures["perplexity"]["base"] == figures["perplexity"]["tuned"]
    # The classifier learned each training reply against the base's reply and the user line it answers.
    assert figures["style"]["pass_as_yours"]["train"] == {"person": 3, "base": 3, "others": 3}
    for heading in ("Style: base model against fine-tuned", "Training", "Data", "GGUF check"):
        assert f"<h2>{heading}</h2>" in page
    assert 'class="missing"' not in page
    assert "Нормально, работаю. — Bob" in page and "Python, as always" not in page  # 2 shown; the third only scored
    assert "Good, thanks &amp; you?" in page and "Привет, как дела?" in page
    match = re.search(r"perplexity on held-out replies: base ([\d.]+) → tuned ([\d.]+) \(\+0%\)", page)
    assert match and match.group(1) == match.group(2)  # the same file on both sides
    assert 1 < float(match.group(1)) < 1e6
    assert "99.9%" in page and "telegram 1, chatgpt 1" in page and "bad&lt;1&gt;.json" in page
    assert "best eval loss</td><td>2.2000" in page


CHROMIUM = shutil.which("chromium")


@pytest.mark.slow  # made_report (see above) and a browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does it)")
def test_report_opens_in_a_real_browser_offline(made_report, tmp_path):
    """Headless Chromium opens report.html with no network (every host name fails to resolve): the verdict is there,
    every image decodes, and the page fetched nothing (the browser's own Resource Timing list of what the page
    loaded). The page is opened as written, with only a probe script added before </body> to read those facts."""
    probe = made_report.with_name("probe.html")
    script = """<script>
window.addEventListener("load", () => {
  // The load event waits for every image; one that failed to load or decode has naturalWidth 0. Synchronous on
  // purpose: an awaited img.decode() did not always settle before --dump-dom (CI, 2026-12-02).
  const images = [...document.images];
  const widths = images.map(img => img.complete ? img.naturalWidth : 0);
  const out = document.createElement("pre");
  out.id = "probe-out";
  out.textContent = JSON.stringify({verdict: document.querySelector("p b") ? document.querySelector("p b").textContent : "",
    images: images.length, widths: widths, fetched: performance.getEntriesByType("resource").map(e => e.name)});
  document.body.appendChild(out);
});
</script>"""
    page = made_report.read_text(encoding="utf-8")
    assert page.count("</body>") == 1
    probe.write_text(page.replace("</body>", script + "</body>"), encoding="utf-8")
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, encoding="utf-8", timeout=180)
    match = re.search(r'<pre id="probe-out">(.*?)</pre>', result.stdout, flags=re.S)
    assert match, result.stdout[-2000:] + result.stderr[-2000:]
    seen = json.loads(html.unescape(match.group(1)))
    assert seen["verdict"].startswith("Your replies average ") and "the tuned model's" in seen["verdict"]
    assert seen["images"] == 3 and all(width > 100 for width in seen["widths"]), seen
    assert seen["fetched"] == []


def test_report_names_the_missing_inputs_and_their_steps(project_copy):
    cfg = load_config(overrides={"paths": {"data_dir": project_copy / "data", "output_dir": project_copy / "output",
                                           "models_dir": project_copy / "models"}})
    page = report.run(cfg).read_text(encoding="utf-8")
    notes = re.findall(r'<p class="missing">(.*?)</p>', page)
    assert len(notes) == 4
    assert "eval_dataset.jsonl is missing: run prepare_dataset" in notes[0]
    assert "Run finetune_gemma first" in notes[1]
    assert "prepare_report.json is missing: prepare_dataset makes it" in notes[2]
    assert "gguf_report.json is missing: convert_to_gguf makes it" in notes[3]

    # A damaged tuned GGUF is a note too, not a crash.
    write_data_file(project_copy / "data", EVAL_CONVERSATIONS)
    (project_copy / "output" / "finetuned_gemma.gguf").write_bytes(b"not a model" * 100)
    page = report.run(cfg).read_text(encoding="utf-8")
    notes = re.findall(r'<p class="missing">(.*?)</p>', page)
    assert "llama.cpp could not load" in notes[0] and "Export the GGUF again (convert_to_gguf)" in notes[0]


@pytest.mark.slow  # the 270M in transformers and in llama.cpp on the same replies (~18 s)
def test_reply_perplexity_matches_transformers(demo_gguf, demo_model_dir, tokenizer_of):
    """The reply-only loss from llama.cpp equals the one transformers computes on the same tokens (Q4_K_M vs fp32:
    within 0.1 nats per token). A prompt/reply split that is off by one token would be far outside."""
    import torch
    from transformers import AutoModelForCausalLM

    figures = reply_perplexity(demo_gguf, EVAL_CONVERSATIONS, n_gpu_layers=0)
    tokenizer = tokenizer_of(demo_model_dir)
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32)
    words_nll = all_nll = 0.0
    words = 0
    for messages in EVAL_CONVERSATIONS:
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        reply = full[len(prompt):].rstrip("\n")
        assert reply == messages[-1]["content"] + "<end_of_turn>"
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + reply_ids])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
        nll = [-log_probs[k - 1, ids[0, k]].item() for k in range(len(prompt_ids), ids.shape[1])]
        words_nll += sum(nll[:-1])  # the last reply token is <end_of_turn>
        all_nll += sum(nll)
        words += len(nll) - 1
    assert figures["tokens"] == words and figures["conversations"] == 3
    assert figures["mean_nll"] == pytest.approx(words_nll / words, abs=0.1)
    assert math.log(figures["perplexity_with_stop"]) == pytest.approx(all_nll / (words + 3), abs=0.1)
