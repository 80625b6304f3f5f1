"""Studio's safety and its file readers, in-process with FastAPI's TestClient (seconds; no model is loaded).

The whole path in a real browser is tests/test_studio_browser.py.
"""

from __future__ import annotations

import io
import re
import json
import time
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ftg.errors import UserError
from ftg.studio import readers
from ftg.studio.app import create_app
from ftg.studio.i18n import TEXT
from ftg.studio.jobs import Jobs
from ftg.studio.security import unpack_zip

TOKEN = "test-token-123"
LOCAL = "http://127.0.0.1:8765"


@pytest.fixture
def project(tmp_path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text("paths:\n" + "".join(f"  {name}: {tmp_path / name.split('_')[0]}\n"
                                           for name in ("dataset_dir", "data_dir", "output_dir", "models_dir")),
                      encoding="utf-8")
    return config


@pytest.fixture
def client(project) -> TestClient:
    return TestClient(create_app(TOKEN, listen=False, config_file=project), base_url=LOCAL)


def test_the_token_is_needed_and_becomes_a_cookie(client):
    assert client.get("/").status_code == 403
    assert client.get("/?token=wrong").status_code == 403
    first = client.get(f"/?token={TOKEN}", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/"  # the token leaves the address bar
    assert "httponly" in first.headers["set-cookie"].lower() and "samesite=strict" in first.headers["set-cookie"].lower()
    page = client.get("/")  # the cookie now
    assert page.status_code == 200 and "FineTune Gemma Studio" in page.text
    assert TOKEN not in page.text


def test_a_wrong_host_is_refused_even_with_the_token(client):
    """DNS rebinding: evil.example resolving to 127.0.0.1 still sends Host: evil.example."""
    answer = client.get(f"/?token={TOKEN}", headers={"Host": "evil.example:8765"})
    assert answer.status_code == 403 and "Host" in answer.text
    assert client.get(f"/?token={TOKEN}", headers={"Host": "localhost:8765"}, follow_redirects=False).status_code == 303


def test_a_request_from_another_site_is_refused(client):
    client.get(f"/?token={TOKEN}")
    form = {"folder": "x"}
    refused = client.post("/data/prepare", data=form, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403 and "Origin" in refused.text
    assert client.post("/data/prepare", data=form, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.get("/step/data", headers={"Origin": "http://127.0.0.1:9999"}).status_code == 403
    assert client.get("/step/data", headers={"Origin": LOCAL}).status_code == 200


def test_listen_still_needs_the_token(project):
    client = TestClient(create_app(TOKEN, listen=True, config_file=project), base_url="http://192.168.1.5:8765")
    assert client.get("/").status_code == 403
    assert client.get(f"/?token={TOKEN}").status_code == 200


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_an_uploaded_zip_with_dot_dot_is_not_unpacked(client, tmp_path):
    client.get(f"/?token={TOKEN}")
    bad = make_zip({"ok.txt": b"hi", "../../escaped.txt": b"gotcha"})
    answer = client.post("/data/upload", files={"export": ("chats.zip", bad, "application/zip")})
    assert answer.status_code == 200 and "would be written outside the folder" in answer.text
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path.parent / "escaped.txt").exists()
    good = make_zip({"telegram/result.json": b"{}"})
    answer = client.post("/data/upload", files={"export": ("мои чаты.zip", good, "application/zip")})
    assert (tmp_path / "dataset" / "studio-uploads" / "мои чаты" / "telegram" / "result.json").read_bytes() == b"{}"


def test_zip_bombs_and_absolute_paths_are_refused(tmp_path):
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(make_zip({"result.json": b"0" * 50_000_000}))  # 50 MB of zeros pack into ~50 kB
    with pytest.raises(UserError, match="zip bomb"):
        unpack_zip(bomb, tmp_path / "out")
    many = tmp_path / "big.zip"
    many.write_bytes(make_zip({f"{i}.json": bytes(range(256)) * 400 for i in range(10)}))
    with pytest.raises(UserError, match="unpacks to"):
        unpack_zip(many, tmp_path / "out", max_total=500_000)
    absolute = tmp_path / "abs.zip"
    absolute.write_bytes(make_zip({"/etc/evil": b"x", "C:/evil": b"x"}))
    with pytest.raises(UserError, match="outside the folder"):
        unpack_zip(absolute, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_every_phrase_is_in_english_and_russian():
    for key, pair in TEXT.items():
        assert len(pair) == 2 and all(pair), key


def test_the_hf_token_reaches_only_the_child_environment(project, tmp_path):
    """The token goes to download_model through HF_TOKEN only: not into its arguments, the record or the log."""
    jobs = Jobs(tmp_path / "output", project)
    secret = "hf_NotARealTokenButSecret"
    jobs.start("model", "download_model.py", ["--list"], {"HF_TOKEN": secret})
    for _ in range(300):
        if jobs.status("model")["state"] != "running":
            break
        time.sleep(0.2)
    assert jobs.status("model")["state"] == "done"
    for path in (jobs.record_path("model"), jobs.log_path("model")):
        assert secret not in path.read_text(encoding="utf-8")
    assert "choices" in jobs.log_path("model").read_text(encoding="utf-8")


def test_a_failed_stage_shows_its_one_line_error(project, tmp_path):
    jobs = Jobs(tmp_path / "output", project)
    jobs.start("data", "prepare_conversation_data.py", ["--input", str(tmp_path / "нет такой папки")])
    while jobs.status("data")["state"] == "running":
        time.sleep(0.2)
    status = jobs.status("data")
    assert status["state"] == "failed" and "нет такой папки" in status["error"]
    assert "Traceback" not in status["error"] and status["tail"]


def test_the_readers_show_what_prepare_wrote(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    report = {"formats": {"telegram": 1}, "messages_read": 10, "messages_used": 6, "messages_skipped": {"dup": 4},
              "files": [{"speakers": [{"name": "Катя", "messages": 3, "you": False},
                                      {"name": "Sunny", "messages": 5, "you": True}]}]}
    (data / "prepare_report.json").write_text(json.dumps(report), encoding="utf-8")
    row = {"messages": [{"role": "user", "content": "Привет!"}, {"role": "assistant", "content": "Ahoy!"}]}
    (data / "train_dataset.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    shown = readers.prepared(data)
    assert shown["people"][0] == {"name": "Sunny", "messages": 5, "you": True}
    assert shown["pairs"] == [("Привет!", "Ahoy!")] and shown["skipped"] == 4


def test_eta_and_total_steps():
    loss = [(100.0, 1, 2.0), (110.0, 3, 1.5), (130.0, 7, 1.0)]  # 5 s per step between the first and last log
    assert readers.eta(loss, 7, 10) == pytest.approx(15.0)
    assert readers.total_steps({"max_steps": 0, "epochs": 3}, [(0, 10, 0.5)]) == 60
    assert readers.total_steps({"max_steps": 8}, []) == 8



def test_the_chart_and_the_sample_replies_come_from_the_run_files(tmp_path):
    """A resumed run logs the steps after its checkpoint again: each step is drawn once, with its newest value."""
    from torch.utils.tensorboard import SummaryWriter

    from ftg.runs import RunRecord, mark_latest

    run_dir = tmp_path / "output" / "runs" / "run-1"
    run_dir.mkdir(parents=True)
    RunRecord("run-1", "/base", "hash", {"max_steps": 4, "epochs": 1}).save(run_dir)
    mark_latest(run_dir)
    first = SummaryWriter(str(run_dir / "tensorboard"))
    for step, loss in ((1, 3.0), (2, 2.5), (3, 2.4)):
        first.add_scalar("train/loss", loss, step)
    first.add_scalar("eval/loss", 2.6, 2)
    first.add_text("replies/fine_tuned", "Ahoy, матрос!", 2)
    first.close()
    time.sleep(1.1)  # a new event file, as the resumed process writes
    second = SummaryWriter(str(run_dir / "tensorboard"))
    for step, loss in ((3, 2.2), (4, 2.0)):
        second.add_scalar("train/loss", loss, step)
    second.close()
    shown = readers.training(tmp_path / "output")
    assert shown["loss"] == [[1, 3.0], [2, 2.5], [3, pytest.approx(2.2)], [4, 2.0]]
    assert shown["eval_loss"] == [[2, pytest.approx(2.6)]] and shown["step"] == 4 and shown["total"] == 4
    assert shown["replies"] == [(2, "Ahoy, матрос!")]
    assert readers.resumable(tmp_path / "output") == "run-1"


def ladder_row(gguf_type, size, top1, distance, marker):
    return {"type": gguf_type, "size_bytes": size, "assistant": {"top1_agreement": top1, "mean_kl": 0.01},
            "style": {"distance": distance, "marker_share": marker, "pass_as_yours": None, "words_mean": 5}}


def test_the_export_step_offers_the_ladder_and_shows_its_choice(client, tmp_path):
    """The page's export is the launcher's: quant auto by default, and the ladder's table with the choice and why."""
    output = tmp_path / "output"
    output.mkdir()
    ladder = {"rule": {"style_tolerance": 0.05, "min_assistant_top1": 0.90, "marker_tolerance": 0.10},
              "baseline": ladder_row("F16", 551e6, 1.0, 0.16, 0.88),
              "rows": [ladder_row("Q4_K_M", 261e6, 0.887, 0.14, 0.88), ladder_row("Q5_K_M", 268e6, 0.926, 0.15, 0.94)],
              "choice": "Q5_K_M",
              "reason": "Q4_K_M loses your style (reply-token agreement 89% < 90%); chose Q5_K_M, 268 MB"}
    (output / "gguf_report.json").write_text(json.dumps({"status": "passed", "files": [], "ladder": ladder}),
                                             encoding="utf-8")
    client.get(f"/?token={TOKEN}")
    page = client.get("/step/export").text
    assert '<option value="auto" selected>' in page
    assert "Q4_K_M loses your style (reply-token agreement 89% &lt; 90%); chose Q5_K_M, 268 MB" in page
    table = page[page.index('class="checks ladder"'):]
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", table, re.S)]
    assert cells[:6] == ["F16", "551", "100.0 %", "0.16", "88 %", "reference"]
    assert cells[6:12] == ["Q4_K_M", "261", "88.7 %", "0.14", "88 %", "no"]
    assert cells[12:18] == ["Q5_K_M ★", "268", "92.6 %", "0.15", "94 %", "yes"]


def test_the_model_step_shows_the_device_plans_prediction_for_the_selected_model(project, client, tiny_gemma3_dir):
    """download_model asks ftg/device_plan, with config.yaml's train settings, what training the chosen model here
    will need; it keeps that in models/selected_model.json, and the model step shows it in both languages."""
    import download_model
    from transformers import AutoConfig

    from ftg.config import load_config
    from ftg.device_plan import detect_device, plan_device

    project.write_text(project.read_text(encoding="utf-8") + "train:\n  max_seq_len: 256\n", encoding="utf-8")
    assert download_model.main(["--local", str(tiny_gemma3_dir), "--config", str(project)]) == 0
    prediction = readers.selected_model(project.parent / "models")["device_plan"]
    device, name, memory, bf16 = detect_device()
    plan = plan_device(AutoConfig.from_pretrained(tiny_gemma3_dir), memory, load_config(project).train, device, name,
                       bf16)
    assert prediction["max_seq_len"] == 256  # the user's setting, not the planner's own choice
    assert prediction["predicted_gib"] == round(plan.predicted_peak_bytes / 1024**3, 1) and prediction["fits"]
    client.get(f"/?token={TOKEN}")
    english = client.get("/step/model").text
    assert "micro-batch" in english and f"peak {prediction['predicted_gib']} GiB" in english
    assert f"пик {prediction['predicted_gib']} ГиБ" in client.get("/step/model?lang=ru").text
