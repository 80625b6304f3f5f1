"""Watch your training runs in TensorBoard: loss, eval loss, learning rate, speed, memory and sample replies.

Reads:   output/runs/*/tensorboard (written by finetune_gemma).
Writes:  nothing.

Run:
    check_tensorboard_runs.bat / ./check_tensorboard_runs.sh     opens the browser (or prints the address)
    python scripts/check_tensorboard_runs.py --port 6010 --no-browser

TensorBoard keeps running until you press Ctrl-C or close the window. It only listens on this computer.
"""

from __future__ import annotations

import argparse
import sys
import time
import webbrowser

from ftg.config import add_config_arguments, config_from_args
from ftg.errors import UserError, run_main
from ftg.paths import runs_dir as ftg_runs_dir


def run(cfg, port: int | None = None, browser: bool = True, block: bool = True) -> str:
    """Start TensorBoard on output/runs and return its address; with block, wait until Ctrl-C."""
    from tensorboard import program

    runs_dir = ftg_runs_dir(cfg.paths.output_dir)
    if not any(runs_dir.glob("*/tensorboard")):
        raise UserError(f"no training runs in {runs_dir} yet. Run finetune_gemma first, then this again.")
    argv = [None, "--logdir", str(runs_dir), "--host", "localhost"]
    if port:
        argv += ["--port", str(port)]  # without it TensorBoard takes 6006, or the next free port
    board = program.TensorBoard()
    board.configure(argv=argv)
    try:
        url = board.launch()
    except program.TensorBoardServerException as exc:
        raise UserError(f"TensorBoard could not start: {exc}. Try another --port.") from None
    print(f"TensorBoard shows the runs in {runs_dir} at {url}")
    if not (browser and webbrowser.open(url)):
        print(f"Open {url} in your browser.")
    print("Tabs: SCALARS = loss curves, speed and memory; TEXT = sample replies. Ctrl-C stops TensorBoard.")
    try:
        while block:
            time.sleep(1)
    except KeyboardInterrupt:
        print("TensorBoard stopped.")
    return url


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, ["paths"])
    parser.add_argument("--port", type=int, default=None, help="port to serve on (default: 6006 or the next free)")
    parser.add_argument("--no-browser", action="store_true", help="only print the address")
    args = parser.parse_args(argv)

    def body() -> int:
        run(config_from_args(args), port=args.port, browser=not args.no_browser)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
