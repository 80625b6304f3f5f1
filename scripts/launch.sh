#!/usr/bin/env bash
# Runs one stage script with the project's .venv; the top-level launchers call this.
# Usage: scripts/launch.sh SCRIPT.py [arguments for the script...]
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.venv/bin/python"
if [ ! -x "$python" ]; then
    echo "The environment is not set up yet. Run ./prepare_venv.sh first." >&2
    exit 1
fi
script="$1"
shift
export PYTHONUTF8=1
exec "$python" "$root/scripts/$script" "$@"
