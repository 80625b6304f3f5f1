"""Studio: a local web page that walks you from a chat export to a GGUF, over the same stages as the launchers.

Reads/writes: what the stages read and write (dataset/, data/, models/, output/); its own logs in output/studio/.
Each step runs the stage's script as its own process, with the arguments its launcher passes, and reads the files it
writes, so you can switch between the page and the launchers on the same folders, and closing the page (or this
server) loses nothing: a training run goes on, and the page picks it up again.

Run:
    studio.bat / ./studio.sh                 opens http://127.0.0.1:8765/?token=... in your browser
    python scripts/studio.py --port 9000 --no-browser
    python scripts/studio.py --listen        reachable from the network too (the token is still needed)

Safety: it listens on 127.0.0.1 only unless --listen; every request needs this launch's token (in the URL it opens,
then a cookie); requests from other sites (Origin) and other host names (Host, DNS rebinding) are refused.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import webbrowser
from pathlib import Path

from ftg.errors import UserError, run_main


def free_port(host: str, wanted: int) -> int:
    """wanted when it is free, else one the system picks (a second Studio, or another program on it)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, wanted))  # 0: any free port
        except OSError:
            probe.bind((host, 0))
        return probe.getsockname()[1]


def run(config_file: Path | None, port: int, listen: bool, open_browser: bool) -> str:
    """Serve Studio until Ctrl-C; returns its address."""
    import uvicorn

    from ftg.studio.app import create_app
    from ftg.studio.security import new_token

    host = "0.0.0.0" if listen else "127.0.0.1"
    port = free_port(host, port)
    token = new_token()
    app = create_app(token, listen, config_file)
    url = f"http://127.0.0.1:{port}/?token={token}"
    print(f"Studio: {url}", flush=True)
    print("Keep this window open while you use the page; Ctrl-C stops the server (a training run goes on).",
          flush=True)
    if open_browser:
        threading.Timer(1.0, webbrowser.open, [url]).start()
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8765, help="port (another free one when it is taken)")
    parser.add_argument("--listen", action="store_true", help="listen on every network interface, not only 127.0.0.1")
    parser.add_argument("--no-browser", action="store_true", help="do not open the browser")
    parser.add_argument("--config", type=Path, default=None, help="settings file for every stage (default: config.yaml)")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.config and not args.config.exists():
            raise UserError(f"{args.config} does not exist. Pass an existing settings file, or leave --config out.")
        run(args.config.resolve() if args.config else None, args.port, args.listen, not args.no_browser)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
