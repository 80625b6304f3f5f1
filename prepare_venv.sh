#!/usr/bin/env bash
# Step 1: set up everything once: .venv, torch (CUDA build with an NVIDIA driver, else CPU), the pinned
# requirements, llama-cpp-python and llama.cpp's GGUF converter. Running it again is quick and says so.
# Override the torch download with FTG_TORCH_INDEX=<pip index URL> (e.g. another CUDA version).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
TORCH_VERSION="2.13.0"
LLAMA_CPP_VERSION="0.3.36"

# The stamp records what was installed; when requirements.txt and this file are unchanged, nothing is redone.
stamp_content="$(cat requirements.txt "$0" | sha256sum | cut -c1-16)"
stamp=".venv/ftg-setup.stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_content" ] && .venv/bin/python scripts/setup_tools.py --check; then
    echo "Already set up. (Delete .venv to start over.)"
    exit 0
fi

python=""
for candidate in python3.12 python3.11 python3.10 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)' 2>/dev/null; then
        python="$candidate"
        break
    fi
done
if [ -z "$python" ]; then
    echo "ERROR: Python 3.10-3.13 not found. Install it (e.g. sudo apt install python3.11 python3.11-venv) and run again." >&2
    exit 1
fi
echo "Using $($python --version) at $(command -v "$python")"

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv || {
        echo "ERROR: could not create .venv. On Debian/Ubuntu: sudo apt install python3-venv, then run again." >&2
        exit 1
    }
fi
pip=(.venv/bin/python -m pip install --disable-pip-version-check)
"${pip[@]}" -q --upgrade pip

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "NVIDIA GPU found: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1). Installing the CUDA build of torch."
    # PyPI's Linux torch wheels are CUDA builds.
    "${pip[@]}" ${FTG_TORCH_INDEX:+--index-url "$FTG_TORCH_INDEX"} "torch==$TORCH_VERSION"
else
    echo "No NVIDIA GPU found. Installing the CPU build of torch (the demo runs; real training needs a GPU)."
    # The CPU index saves a multi-GB CUDA download; where it cannot be reached, fall back to PyPI.
    "${pip[@]}" --index-url "${FTG_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" "torch==$TORCH_VERSION" 2>/dev/null ||
        "${pip[@]}" "torch==$TORCH_VERSION"
fi

echo "Installing the pinned libraries (requirements.txt)..."
"${pip[@]}" -r requirements.txt

if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null ||
    [ "$(.venv/bin/python -c 'import llama_cpp; print(llama_cpp.__version__)')" != "$LLAMA_CPP_VERSION" ]; then
    echo "Installing llama-cpp-python $LLAMA_CPP_VERSION. It is compiled from source: about 4-11 minutes on 2 cores,"
    echo "once (pip keeps the built wheel). Please wait; the output below is the compiler at work."
    if command -v nvcc >/dev/null 2>&1; then
        echo "CUDA compiler found: building with GPU offload for chat."
        export CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_CUDA=on"
    fi
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || echo 2)" "${pip[@]}" "llama-cpp-python==$LLAMA_CPP_VERSION" || {
        echo "ERROR: llama-cpp-python did not compile. Install a C/C++ compiler and CMake" >&2
        echo "(Debian/Ubuntu: sudo apt install build-essential cmake; macOS: xcode-select --install), then run again." >&2
        exit 1
    }
fi

.venv/bin/python scripts/setup_tools.py
echo "$stamp_content" > "$stamp"
