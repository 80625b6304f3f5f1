"""Studio runs each stage as its own process, as the launchers do, and keeps only files about it.

output/studio/<job>.log    the stage's console output (stdout + stderr)
output/studio/<job>.json   {"script", "args", "pid", "created", "started", "ended", "rc"}: no secret goes in here
                           (the HF token reaches download_model through its environment only)

The stage process is started in its own session, so it goes on when the server is killed; a restarted server finds
it again by its pid and creation time (a reused pid is not mistaken for it). One stage at a time: they share data/
and output/, and a second start is refused with the name of the one that is running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from ftg.files import write_json
from ftg.paths import PROJECT_ROOT

STUDIO_DIR = "studio"
"""output/studio/: the logs and records of the stages Studio started."""
TAIL_LINES = 15
"""Log lines shown under a failed stage: enough for the cause, without the whole traceback."""


class Busy(Exception):
    """A stage is already running; its job name is the message."""


class Jobs:
    """The stage processes of one project folder (output_dir) and their records."""

    def __init__(self, output_dir: Path, config_file: Path | None = None):
        self.folder = Path(output_dir) / STUDIO_DIR
        self.config_file = config_file
        self.lock = threading.Lock()

    def record_path(self, job: str) -> Path:
        return self.folder / f"{job}.json"

    def log_path(self, job: str) -> Path:
        return self.folder / f"{job}.log"

    def record(self, job: str) -> dict:
        try:
            return json.loads(self.record_path(job).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def alive(self, job: str) -> bool:
        """Whether the process this job's record names still runs (pid and creation time both match)."""
        info = self.record(job)
        if not info.get("pid") or info.get("ended"):
            return False
        try:
            process = psutil.Process(info["pid"])
            return abs(process.create_time() - info["created"]) < 1 and process.status() != psutil.STATUS_ZOMBIE
        except (psutil.Error, KeyError, TypeError):
            return False

    def running(self) -> str:
        """The job that is running now, or ''."""
        for path in sorted(self.folder.glob("*.json")) if self.folder.exists() else []:
            if self.alive(path.stem):
                return path.stem
        return ""

    def start(self, job: str, script: str, args: list[str], secret_env: dict | None = None) -> None:
        """Start scripts/<script> with args (the launchers' arguments + --config) unless a stage runs (Busy)."""
        with self.lock:
            busy = self.running()
            if busy:
                raise Busy(busy)
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.config_file:
                args = [*args, "--config", str(self.config_file)]
            command = [sys.executable, str(PROJECT_ROOT / "scripts" / script), *args]
            env = {**os.environ, "PYTHONUTF8": "1", "PYTHONUNBUFFERED": "1", **(secret_env or {})}
            log = open(self.log_path(job), "wb")
            flags = subprocess.CREATE_NEW_PROCESS_GROUP if os.name == "nt" else 0
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, cwd=PROJECT_ROOT, start_new_session=os.name != "nt",
                                       creationflags=flags)
            log.close()
            info = {"script": script, "args": args, "pid": process.pid, "created": psutil.Process(process.pid).create_time(),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"), "ended": "", "rc": None}
            write_json(self.record_path(job), info)
        threading.Thread(target=self._wait, args=(job, process, info), daemon=True).start()

    def _wait(self, job: str, process: subprocess.Popen, info: dict) -> None:
        rc = process.wait()
        write_json(self.record_path(job), {**info, "ended": time.strftime("%Y-%m-%d %H:%M:%S"), "rc": rc})

    def stop(self, job: str) -> bool:
        """Ask the stage to stop as Ctrl-C does (finetune_gemma finishes the step and saves a checkpoint)."""
        if not self.alive(job):
            return False
        pid = self.record(job)["pid"]
        os.kill(pid, signal.CTRL_BREAK_EVENT if os.name == "nt" else signal.SIGINT)
        return True

    def status(self, job: str) -> dict:
        """{"state": idle | running | done | failed | stopped | lost, "error": one line, "tail": last log lines}.

        lost: the process is gone and nobody saw it end (the server was killed too); the caller decides from the
        stage's own files (a training run.json says whether to offer resume)."""
        info = self.record(job)
        if not info:
            return {"state": "idle", "error": "", "tail": [], "started": ""}
        lines = self.tail(job)
        if self.alive(job):
            state = "running"
        elif info.get("rc") is None:
            state = "lost"
        else:
            state = {0: "done", 130: "stopped"}.get(info["rc"], "failed")
        errors = [line[len("ERROR: "):] for line in lines if line.startswith("ERROR: ")]
        if state == "failed" and not errors:
            errors = [lines[-1] if lines else f"exit code {info['rc']}"]
        return {"state": state, "error": errors[-1] if errors and state == "failed" else "", "tail": lines,
                "started": info.get("started", ""), "rc": info.get("rc")}

    def tail(self, job: str, count: int = TAIL_LINES) -> list[str]:
        """The last lines of the job's log, progress bars reduced to their latest state."""
        try:
            with open(self.log_path(job), "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        lines = [([part for part in line.split("\r") if part.strip()] or [""])[-1].rstrip() for line in text.split("\n")]
        return [line for line in lines if line.strip()][-count:]
