"""The Talk step: the base and the tuned GGUF answer one message, streamed piece by piece as server-sent events.

The GGUFs run in the server process through ftg/gguf_run.py (the project's one seam to llama.cpp), one reply at a
time: on a small machine two at once would only halve each one's speed. A model stays open until its file changes.
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

from ftg.errors import UserError
from ftg.gguf_run import generate_reply, open_gguf

_models: dict[str, tuple[float, object]] = {}
_one_at_a_time = threading.Lock()


def model_for(path: Path, context_size: int, n_gpu_layers: int):
    """The open model for this GGUF, opened again when the file was rewritten (a new export)."""
    stamp = path.stat().st_mtime if path.exists() else 0.0
    known = _models.get(str(path))
    if known and known[0] == stamp:
        return known[1]
    if known:
        known[1].close()
    model = open_gguf(path, context_size, n_gpu_layers)
    _models[str(path)] = (stamp, model)
    return model


def event(name: str, data) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def stream(gguf: Path, message: str, chat_cfg):
    """Yield SSE text: 'piece' events as the reply grows, then 'end' (or 'fail' with the one-line reason)."""
    pieces: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            with _one_at_a_time:
                model = model_for(gguf, chat_cfg.context_size, chat_cfg.n_gpu_layers)
                messages = ([{"role": "system", "content": chat_cfg.system_prompt}] if chat_cfg.system_prompt.strip()
                            else []) + [{"role": "user", "content": message}]
                generate_reply(model, messages, chat_cfg.max_tokens, chat_cfg.temperature,
                               lambda piece: pieces.put(("piece", piece)))
            pieces.put(("end", ""))
        except UserError as exc:
            pieces.put(("fail", str(exc)))
        except Exception as exc:  # the page must stay usable; the reason is shown in one line
            pieces.put(("fail", f"{type(exc).__name__}: {exc}"))

    threading.Thread(target=work, daemon=True).start()
    while True:
        kind, text = pieces.get()
        yield event(kind, text)
        if kind != "piece":
            return
