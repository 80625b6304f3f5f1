"""Studio's routes: each handler starts a stage process (ftg/studio/jobs.py) or reads its files (readers.py).

The page is one template per step (templates/step_*.html); htmx swaps a step's panel after a form is sent and,
while its stage runs, every 2 s. The training chart and the Talk replies come as server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from ftg.config import load_config
from ftg.errors import UserError
from ftg.paths import BASE_GGUF, MAIN_GGUF, MODELFILE, PROJECT_ROOT, REPORT_HTML
from ftg.studio import readers, security, talk
from ftg.studio.i18n import pick_language, translate
from ftg.studio.jobs import Busy, Jobs

HERE = Path(__file__).parent
_menu: dict = {}
STEPS = ("model", "data", "train", "export", "talk")
QUANTS = ("auto", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q3_K_M")
"""auto (the default, export.quant): the quant ladder picks the smallest file that keeps your style."""
UPLOAD_FOLDER = "studio-uploads"
"""dataset/studio-uploads/: what the page received; prepare_dataset reads all of dataset/, as its launcher does."""


def create_app(token: str, listen: bool = False, config_file: Path | None = None) -> FastAPI:
    """The Studio app for the project folders of config_file (default config.yaml)."""
    cfg = load_config(config_file)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.cfg, app.state.jobs = cfg, Jobs(cfg.paths.output_dir, config_file)
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        problem = security.request_problem(request.method, dict(request.headers), request.cookies,
                                           dict(request.query_params), token, listen)
        if problem:
            return PlainTextResponse(f"403: {problem}", status_code=403)
        if "token" in request.query_params or "lang" in request.query_params:  # keep both in cookies, not the URL
            response = RedirectResponse(request.url.path, status_code=303)
        else:
            response = await call_next(request)
        response.set_cookie(security.TOKEN_COOKIE, token, httponly=True, samesite="strict")
        if request.query_params.get("lang") in ("en", "ru"):
            response.set_cookie("lang", request.query_params["lang"], samesite="strict")
        response.headers["X-Frame-Options"] = "DENY"
        return response

    add_routes(app)
    return app


def language(request: Request) -> str:
    return pick_language(request.query_params.get("lang"), request.cookies.get("lang"),
                         request.headers.get("accept-language"))


def page(request: Request, template: str, **context) -> HTMLResponse:
    lang = language(request)
    context.update(lang=lang, t=lambda key, **values: translate(lang, key, **values))
    return request.app.state.templates.TemplateResponse(request, template, context)


def step_context(app: FastAPI, step: str) -> dict:
    """What the template of one step shows, all read from the stages' files."""
    cfg, jobs = app.state.cfg, app.state.jobs
    context = {"step": step, "job": jobs.status(step), "busy": jobs.running()}
    if step == "model":
        context.update(selected=readers.selected_model(cfg.paths.models_dir), menu=model_menu(app))
    elif step == "data":
        context.update(prepared=readers.prepared(cfg.paths.data_dir))
    elif step == "train":
        resumable = "" if context["job"]["state"] == "running" else readers.resumable(cfg.paths.output_dir)
        context.update(training=readers.training(cfg.paths.output_dir), train=cfg.train, resumable=resumable,
                       resume_settings=readers.run_settings(cfg.paths.output_dir) if resumable else {})
    elif step == "export":
        context.update(exported=readers.exported(cfg.paths.output_dir), quants=QUANTS, quant=cfg.export.quant)
    elif step == "talk":
        output = cfg.paths.output_dir
        context.update(tuned=(output / MAIN_GGUF).exists(), base=(output / BASE_GGUF).exists(),
                       prompts=readers.eval_prompts(cfg.paths.data_dir), report=readers.report_summary(output))
    return context


def model_menu(app: FastAPI) -> dict:
    """download_model's menu and this card's memory, asked once from the stage itself (download_model --list)."""
    if not _menu:  # the same for every project folder on this computer: asked once per server (~3 s: torch)
        done = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "download_model.py"), "--list"],
                              capture_output=True, text=True, encoding="utf-8", cwd=PROJECT_ROOT)
        try:
            _menu.update(json.loads(done.stdout))
        except ValueError:
            return {"vram_gib": 0, "default": "", "choices": []}
    return _menu


def start(request: Request, step: str, script: str, args: list[str], secret_env: dict | None = None) -> HTMLResponse:
    """Start the step's stage and answer with its panel; a stage already running is said on the panel."""
    notice = ""
    try:
        request.app.state.jobs.start(step, script, args, secret_env)
    except Busy as busy:
        notice = translate(language(request), "busy", job=str(busy))
    return page(request, f"step_{step}.html", notice=notice, s=step_context(request.app, step))


def add_routes(app: FastAPI) -> None:
    """Register the routes on app (one function per kind keeps each short)."""
    add_page_routes(app)
    add_stage_routes(app)
    add_stream_routes(app)


def add_page_routes(app: FastAPI) -> None:
    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request):
        steps = {step: step_context(app, step) for step in STEPS}
        return page(request, "index.html", steps=steps)

    @app.get("/step/{step}", response_class=HTMLResponse)
    async def step_panel(request: Request, step: str):
        if step not in STEPS:
            return PlainTextResponse("no such step", status_code=404)
        return page(request, f"step_{step}.html", notice="", s=step_context(app, step))

    @app.get("/files/{name}")
    async def files(name: str):
        output = app.state.cfg.paths.output_dir
        known = {"gguf": output / MAIN_GGUF, "modelfile": output / MODELFILE, "report": output / REPORT_HTML}
        path = known.get(name)
        if path is None or not path.exists():
            return PlainTextResponse("not there yet", status_code=404)
        if name == "report":
            return FileResponse(path, media_type="text/html")
        return FileResponse(path, filename=path.name)


def add_stage_routes(app: FastAPI) -> None:
    @app.post("/model/download", response_class=HTMLResponse)
    async def model_download(request: Request, choice: str = Form(""), hf_token: str = Form("")):
        if choice == "demo":
            return start(request, "model", "download_model.py", ["--demo"])
        keys = {c["key"] for c in model_menu(app)["choices"]}
        if choice not in keys:
            return PlainTextResponse("unknown model", status_code=400)
        # The token goes to the child's environment only: not into its arguments, the job record or the log.
        secret = {"HF_TOKEN": hf_token.strip()} if hf_token.strip() else None
        return start(request, "model", "download_model.py", ["--choice", choice], secret)

    @app.post("/data/upload", response_class=HTMLResponse)
    async def data_upload(request: Request, export: UploadFile = File(...)):
        notice = ""
        try:
            notice = translate(language(request), "upload_done") + " " + str(await receive_upload(app, export))
        except UserError as exc:
            notice = translate(language(request), "error") + ": " + str(exc)
        return page(request, "step_data.html", notice=notice, s=step_context(app, "data"))

    @app.post("/data/prepare", response_class=HTMLResponse)
    async def data_prepare(request: Request):
        form = await request.form()
        args = []
        folder = str(form.get("folder", "")).strip()
        if folder:
            args += ["--input", folder]
        for name in form.getlist("me"):
            args += ["--me", str(name)]
        return start(request, "data", "prepare_conversation_data.py", args)

    @app.post("/train/start", response_class=HTMLResponse)
    async def train_start(request: Request, max_steps: int = Form(0), learning_rate: float = Form(2e-4),
                          eval_every: int = Form(50), resume: str = Form("auto")):
        # What finetune_gemma's launcher runs (pipeline.py train), without the export: that is step 4 here.
        args = ["train", "--no-auto-export", "--max-steps", str(max_steps), "--learning-rate", f"{learning_rate:g}",
                "--eval-every", str(eval_every), "--resume", resume if resume in ("auto", "new", "force") else "auto"]
        return start(request, "train", "pipeline.py", args)

    @app.post("/train/stop", response_class=HTMLResponse)
    async def train_stop(request: Request):
        app.state.jobs.stop("train")
        await asyncio.sleep(0.5)
        return page(request, "step_train.html", notice="", s=step_context(app, "train"))

    @app.post("/export/start", response_class=HTMLResponse)
    async def export_start(request: Request, quant: str = Form("auto")):
        # What convert_to_gguf's launcher runs; --quant given, so no console menu is asked.
        return start(request, "export", "pipeline.py", ["export", "--quant", quant if quant in QUANTS else "auto"])


async def receive_upload(app: FastAPI, export: UploadFile) -> Path:
    """Save an uploaded export under dataset/studio-uploads/ (a zip unpacked into a folder of its name)."""
    name = security.safe_name(export.filename or "")
    folder = app.state.cfg.paths.dataset_dir / UPLOAD_FOLDER
    folder.mkdir(parents=True, exist_ok=True)

    def chunks():
        while chunk := export.file.read(1024**2):
            yield chunk

    target = folder / name
    await asyncio.to_thread(security.save_stream, chunks(), target)
    if name.lower().endswith(".zip"):
        unpacked = folder / re.sub(r"\.zip$", "", name, flags=re.IGNORECASE)
        try:
            await asyncio.to_thread(security.unpack_zip, target, unpacked)
        finally:
            target.unlink()
        return unpacked
    return target


def add_stream_routes(app: FastAPI) -> None:
    @app.get("/events/train")
    async def train_events(request: Request):
        async def updates():
            last = None
            while not await request.is_disconnected():
                now = await asyncio.to_thread(readers.training, app.state.cfg.paths.output_dir)
                if now != last:
                    yield f"data: {json.dumps(now)}\n\n"
                    last = now
                await asyncio.sleep(2)

        return StreamingResponse(updates(), media_type="text/event-stream")

    @app.get("/talk/stream")
    async def talk_stream(which: str, message: str):
        output = app.state.cfg.paths.output_dir
        gguf = output / (BASE_GGUF if which == "base" else MAIN_GGUF)
        return StreamingResponse(iterate_in_thread(talk.stream(gguf, message[:4000], app.state.cfg.chat)),
                                 media_type="text/event-stream")


async def iterate_in_thread(generator):
    """A blocking generator (the llama.cpp reply) served without blocking the server's other requests."""
    done = object()
    while (item := await asyncio.to_thread(next, generator, done)) is not done:
        yield item
