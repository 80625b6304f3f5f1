#!/usr/bin/env bash
# Step 1: set up everything once: .venv, torch (CUDA build with an NVIDIA driver, else CPU), the pinned
# requirements, the prebuilt llama.cpp runtime and llama.cpp's GGUF converter. Nothing is compiled. Running it again
# is quick and says so. If the llama.cpp runtime cannot be installed, setup still finishes: training does not need it.
# Override the torch download with FTG_TORCH_INDEX=<pip index URL> (e.g. another CUDA version).
# FTG_BUILD_LLAMA_CPP=1 also compiles llama-cpp-python (4-11 min; with CUDA only when a GPU, nvcc and cuBLAS are there).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
TORCH_VERSION="2.13.0"
LLAMA_RUNTIME="llama-cpp-py-sync==0.11739"
LLAMA_CPP_VERSION="0.3.36"

# The stamp records what was installed; when requirements.txt and this file are unchanged, nothing is redone.
stamp_content="$(cat requirements.txt "$0" | sha256sum | cut -c1-16)"
stamp=".venv/ftg-setup.stamp"
# Without the llama.cpp runtime it tries again (pip skips what is already there), so "run prepare_venv again" helps.
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_content" ] && .venv/bin/python -c "import llama_cpp_py_sync" 2>/dev/null &&
    .venv/bin/python scripts/setup_tools.py --check; then
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

echo "Installing the llama.cpp runtime ($LLAMA_RUNTIME, a prebuilt wheel: nothing to compile)..."
"${pip[@]}" -q --only-binary :all: "$LLAMA_RUNTIME" ||
    echo "llama.cpp runtime: NOT installed (no wheel for this machine, or no connection). Training works without it; see the table below."

if [ "${FTG_BUILD_LLAMA_CPP:-0}" = "1" ]; then
    # Opt-in: llama-cpp-python compiled here. CUDA only when a GPU, nvcc and cuBLAS are all there.
    decision="$(.venv/bin/python scripts/setup_tools.py --cuda-decision)"
    build() { CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || echo 2)" "${pip[@]}" --no-cache-dir "llama-cpp-python==$LLAMA_CPP_VERSION"; }
    echo "Compiling llama-cpp-python $LLAMA_CPP_VERSION (FTG_BUILD_LLAMA_CPP=1): 4-11 minutes on 2 cores."
    if [ "$decision" = "cuda" ]; then
        echo "Building with CUDA (GPU, nvcc and cuBLAS found)."
        CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_CUDA=on" build ||
            { echo "The CUDA build of llama-cpp-python failed (its messages are above); building the CPU one instead."; CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_CUDA=off" build; } ||
            echo "llama-cpp-python: the CPU build failed too (compiler messages above). Setup goes on without it: it is optional."
    else
        echo "Building for the CPU: ${decision#cpu: }."
        CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_CUDA=off" build ||
            echo "llama-cpp-python: the build failed (compiler messages above). Setup goes on without it: it is optional."
    fi
fi

.venv/bin/python scripts/setup_tools.py
echo "$stamp_content" > "$stamp"
