"""The last part of prepare_venv: the llama.cpp runtime's repair, the HF->GGUF converter, and the check table.

Reads:   the llama-cpp-python source package from PyPI (only its vendor/llama.cpp converter is used).
Writes:  tools/llama.cpp/ with convert_hf_to_gguf.py, conversion/, gguf-py/ and requirements/ of CONVERTER_FROM.
         The runtime (llama-cpp-py-sync, prebuilt) is newer than that converter: llama.cpp loads the GGUFs older
         converters wrote, and tests/test_llama_runtime.py proves the runtime accepts every Gemma architecture the
         converter writes.

Run:     python scripts/setup_tools.py                 (prepare_venv does this for you)
         python scripts/setup_tools.py --check         only print the check table
         python scripts/setup_tools.py --cuda-decision print "cuda" or "cpu: <why>" for a llama.cpp build
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import urllib.parse
import urllib.request
import subprocess
import sys
import struct
import tarfile
import tempfile
from pathlib import Path

from ftg.errors import UserError, run_main
from ftg.paths import CONVERTER_DIR, CONVERTER_SCRIPT  # ftg.paths needs no PyYAML: --cuda-decision runs before it

VERSION_FILE = CONVERTER_DIR / "VERSION"
# What the converter needs from llama.cpp's source tree (vendor/llama.cpp/ inside the sdist).
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "requirements/", "LICENSE")
# Where the converter comes from (its vendor/llama.cpp is llama.cpp@0c1e57098), and the runtime prepare_venv installs.
CONVERTER_FROM = ("llama-cpp-python", "0.3.36")
RUNTIME = "llama-cpp-py-sync==0.11739"
# The steps that need the runtime, for the check table and the runtime's own error line.
RUNTIME_STEPS = "K-quant GGUFs (Q4_K_M...), the GGUF check, chat"


def cuda_build_decision(which=shutil.which, run=subprocess.run) -> tuple[bool, str]:
    """Whether a llama.cpp build from source should use CUDA: only with a GPU and a complete toolkit.

    A GPU: nvidia-smi answers and lists one. A toolkit: nvcc, and cuBLAS's header beside it (cublas_v2.h), since
    CMake's "native" architectures need a GPU and ggml-cuda needs cuBLAS. Returns (use_cuda, the reason in words).
    """
    smi = which("nvidia-smi")
    gpu = ""
    if smi:
        try:
            result = run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            gpu = result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else ""
        except (OSError, subprocess.TimeoutExpired):
            gpu = ""
    nvcc = which("nvcc")
    if not gpu:
        return False, "no NVIDIA GPU found" + (f" (nvcc at {nvcc} is not enough)" if nvcc else "")
    if not nvcc:
        return False, f"GPU {gpu} found but no CUDA compiler (nvcc); install the CUDA toolkit for GPU chat"
    roots = [Path(nvcc).resolve().parent.parent, Path(os.environ.get("CUDA_PATH", "/usr/local/cuda"))]
    headers = [root / sub / "cublas_v2.h" for root in roots for sub in ("include", "targets/x86_64-linux/include")]
    if not any(header.exists() for header in headers):
        return False, f"GPU {gpu} and nvcc found, but cuBLAS is missing (no cublas_v2.h under {roots[0]})"
    return True, f"GPU {gpu}, nvcc and cuBLAS found"


GLIBC_238_NAMES = {b"__isoc23_strtol": b"strtol", b"__isoc23_strtoul": b"strtoul", b"__isoc23_strtoull": b"strtoull",
                   b"__isoc23_sscanf": b"__isoc99_sscanf"}


def _unask_glibc_238(path: Path) -> int:
    """Let an x86_64 ELF built against glibc 2.38 load on glibc 2.17-2.37, in place; returns the entries changed.

    The runtime's Linux wheels are tagged manylinux2014 but were linked on glibc 2.38, whose headers turn strtol and
    sscanf into __isoc23_strtol and __isoc23_sscanf (they also read "0b101"). Those are the only 2.38 symbols they
    ask for. Each is pointed back at the C99 function (strtol is the tail of "__isoc23_strtol", so only an offset
    changes), its version request is dropped, and the now unused GLIBC_2.38 requirement is marked weak.
    """
    data = bytearray(path.read_bytes())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # 64-bit little-endian only
        return 0
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    by_type = {section[1]: section for section in sections}
    dynsym, versym, verneed = by_type.get(11), by_type.get(0x6FFFFFFF), by_type.get(0x6FFFFFFE)
    if dynsym is None:
        return 0
    strtab = sections[dynsym[6]][4]

    def name_at(offset: int) -> bytes:
        return bytes(data[strtab + offset:data.index(0, strtab + offset)])

    changed = 0
    for i in range(dynsym[5] // 24):
        entry = dynsym[4] + i * 24
        offset, = struct.unpack_from("<I", data, entry)
        new = GLIBC_238_NAMES.get(name_at(offset))
        if new is None:
            continue
        old = name_at(offset)
        if old.endswith(new):
            struct.pack_into("<I", data, entry, offset + len(old) - len(new))
        else:  # __isoc23_sscanf -> __isoc99_sscanf: same length, rewritten in place
            data[strtab + offset:strtab + offset + len(new)] = new
        if versym is not None:
            struct.pack_into("<H", data, versym[4] + i * 2, 1)  # VER_NDX_GLOBAL
        changed += 1
    if verneed is not None:
        need = verneed[4]
        while True:
            _, count, _, aux_offset, next_need = struct.unpack_from("<HHIII", data, need)
            aux = need + aux_offset
            for _ in range(count):
                _, flags, _, name, next_aux = struct.unpack_from("<IHHII", data, aux)
                if name_at(name) == b"GLIBC_2.38" and not flags & 2:
                    struct.pack_into("<H", data, aux + 4, flags | 2)  # VER_FLG_WEAK
                    changed += 1
                aux += next_aux
            if not next_need:
                break
            need += next_need
    if changed:
        path.write_bytes(bytes(data))
    return changed


def _runtime_loads() -> tuple[bool, str]:
    code = "from llama_cpp_py_sync._cffi_bindings import get_lib; get_lib()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return result.returncode == 0, (result.stderr.strip().splitlines() or [""])[-1]


def repair_runtime() -> str:
    """Make the installed runtime load here; returns what was done, or raises UserError with the cause."""
    if installed_version("llama_cpp_py_sync") is None:
        return "not installed"
    ok, error = _runtime_loads()
    if ok:
        return "loads"
    if platform.system() == "Linux" and "GLIBC_2.38" in error:
        # Found, not imported: only ftg/llama_runtime.py loads the runtime (tests/test_structure.py).
        folder = Path(importlib.util.find_spec("llama_cpp_py_sync").submodule_search_locations[0])
        for library in sorted(folder.glob("lib*.so*")):
            _unask_glibc_238(library)
        ok, error = _runtime_loads()
        if ok:
            print("llama.cpp runtime: its libllama asked for glibc 2.38; adapted to this older glibc.")
            return "adapted to this glibc"
    raise UserError(f"the llama.cpp runtime is installed but does not load: {error}")


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _download_sdist(package: str, version: str, folder: str) -> Path | None:
    """The source package straight from the package index's simple API (PEP 691 JSON, seconds). `pip download`
    of an sdist also installs its build tools to read its metadata, which took 2 min 17 s here."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    wanted = f"{package.replace('-', '_')}-{version}.tar.gz"
    try:
        request = urllib.request.Request(f"{index}/{package}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            files = json.load(answer)["files"]
        url = urllib.parse.urljoin(f"{index}/{package}/", next(f["url"] for f in files if f["filename"] == wanted))
        target = Path(folder) / wanted
        with urllib.request.urlopen(url, timeout=600) as answer, open(target, "wb") as out:
            shutil.copyfileobj(answer, out, 1 << 20)
        return target
    except (OSError, ValueError, KeyError, StopIteration):
        return None


def ensure_converter() -> Path:
    """Unpack the converter of CONVERTER_FROM into tools/llama.cpp (once per version)."""
    package, version = CONVERTER_FROM
    if CONVERTER_SCRIPT.exists() and VERSION_FILE.exists() and VERSION_FILE.read_text().strip() == version:
        print(f"llama.cpp converter {version}: already set up in {CONVERTER_DIR}")
        return CONVERTER_SCRIPT
    print(f"Fetching llama.cpp's converter from the llama-cpp-python {version} source package (76 MB, once)...")
    with tempfile.TemporaryDirectory() as tmp:
        archive_path = _download_sdist(package, version, tmp)
        if archive_path is None:  # a proxy or mirror that only pip knows about
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            f"{package}=={version}", "-d", tmp], capture_output=True, text=True)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if not archives:
            raise UserError(
                f"could not download the llama-cpp-python {version} source package (needed for the GGUF converter). "
                "Check the internet connection and run prepare_venv again."
            )
        partial = CONVERTER_DIR.with_name("llama.cpp.partial")
        shutil.rmtree(partial, ignore_errors=True)
        prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                name = member.name
                if not name.startswith(prefix) or not (member.isfile() or member.isdir()):
                    continue
                relative = name[len(prefix):]
                if any(relative == part or relative.startswith(part) for part in CONVERTER_PARTS):
                    member.name = relative
                    archive.extract(member, partial, filter="data")
    (partial / "VERSION").write_text(version)
    from ftg.files import replace_dir

    replace_dir(partial, CONVERTER_DIR)
    print(f"llama.cpp converter {version}: ready in {CONVERTER_DIR}")
    return CONVERTER_SCRIPT


def check_table() -> list[tuple[str, str, bool]]:
    """(component, what was found, ok) for the end of prepare_venv."""
    rows = []
    # prepare_venv's FTG_TORCH=skip (the wine test): what needs torch is a NOTE, not a failed setup.
    missing_ok = None if os.environ.get("FTG_TORCH") == "skip" else False
    try:
        import torch

        rows.append(("torch", torch.__version__, True))
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            gpu = f"yes: {props.name}, {props.total_memory / 1024**3:.0f} GiB VRAM"
            rows.append(("CUDA", gpu, True))
        else:
            rows.append(("CUDA", "no (CPU only: the demo works, real training needs an NVIDIA GPU)", True))
        cuda = torch.cuda.is_available()
    except ImportError:
        rows.append(("torch", "MISSING", missing_ok))
        cuda = False
    for package in ("transformers", "peft", "trl", "datasets", "accelerate"):
        version = installed_version(package)
        rows.append((package, version or "MISSING", True if version else missing_ok))
    bnb = installed_version("bitsandbytes")
    rows.append(("bitsandbytes", (bnb or "MISSING") + ("" if cuda else " (used on GPU only)"), bnb is not None or not cuda))
    from ftg import llama_runtime

    try:
        llama_runtime.require_runtime("llama.cpp")
        where = "GPU offload for chat" if llama_runtime.gpu_offload_supported() else "CPU"
        rows.append(("llama_cpp", f"{llama_runtime.runtime_version()}, {where}", True))
    except UserError:  # optional: training does not need it
        rows.append(("llama_cpp", f"MISSING ({RUNTIME}), needed only for {RUNTIME_STEPS}. "
                     "To get it: run prepare_venv again where PyPI can be reached", None))
    found = CONVERTER_SCRIPT.exists()
    rows.append(("converter", str(CONVERTER_SCRIPT) if found else "MISSING", found))
    return rows


def print_check_table(rows) -> bool:
    """ok True: OK; False: BAD (setup failed); None: NOTE (an optional part is missing; prepare/train/merge work).
    Returns whether nothing is BAD."""
    width = max(len(name) for name, _, _ in rows)
    print("\nSetup check:")
    for name, found, ok in rows:
        print(f"  {'OK  ' if ok else 'NOTE' if ok is None else 'BAD '}  {name:<{width}}  {found}")
    return all(ok is not False for _, _, ok in rows)


def run(check_only: bool = False) -> list[tuple[str, str, bool | None]]:
    """Set up (unless check_only) and print the check table; returns its rows."""
    if not check_only:
        try:
            repair_runtime()
        except UserError as exc:
            print(f"NOTE: {exc}. Training works without it; {RUNTIME_STEPS} need it.")
        ensure_converter()
    rows = check_table()
    print_check_table(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only print the check table")
    parser.add_argument("--cuda-decision", action="store_true", help='print "cuda" or "cpu: <why>", nothing else')
    args = parser.parse_args(argv)
    if args.cuda_decision:
        use_cuda, reason = cuda_build_decision()
        print("cuda" if use_cuda else f"cpu: {reason}")
        return 0

    def body() -> int:
        rows = run(args.check)
        if all(ok is not False for _, _, ok in rows):
            if any(ok is None for _, _, ok in rows):
                print("\nReady to prepare, train and merge; the NOTE above says what else is missing and how to get it.")
            else:
                print("\nAll set. Next: download_model (or run_demo for the offline demo).")
            return 0
        raise UserError("some parts are missing (BAD above). Run prepare_venv again and read its messages.")

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
