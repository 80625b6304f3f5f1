"""The last part of prepare_venv: llama.cpp's HF->GGUF converter, and the check table.

Reads:   the llama-cpp-python source package from PyPI (pip's cache makes a second run instant).
Writes:  tools/llama.cpp/ with convert_hf_to_gguf.py, conversion/, gguf-py/ and requirements/, taken from the
         same llama-cpp-python version that is installed, so the converter and the quantizer always match.

Run:     python scripts/setup_tools.py            (prepare_venv does this for you)
         python scripts/setup_tools.py --check    only print the check table
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ftg.config import PROJECT_ROOT
from ftg.errors import UserError, run_main
from ftg.files import replace_dir
from ftg.paths import CONVERTER_DIR, CONVERTER_SCRIPT

VERSION_FILE = CONVERTER_DIR / "VERSION"
# What the converter needs from llama.cpp's source tree (vendor/llama.cpp/ inside the sdist).
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "requirements/", "LICENSE")


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_converter() -> Path:
    """Unpack the converter of the installed llama-cpp-python version into tools/llama.cpp (once per version)."""
    version = installed_version("llama_cpp_python")
    if version is None:
        raise UserError("llama-cpp-python is not installed. Run prepare_venv again and read its messages.")
    if CONVERTER_SCRIPT.exists() and VERSION_FILE.exists() and VERSION_FILE.read_text().strip() == version:
        print(f"llama.cpp converter {version}: already set up in {CONVERTER_DIR}")
        return CONVERTER_SCRIPT
    print(f"Fetching llama.cpp's converter from the llama-cpp-python {version} source package (76 MB, once)...")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "-d", tmp],
            capture_output=True, text=True,
        )
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if result.returncode != 0 or not archives:
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
    replace_dir(partial, CONVERTER_DIR)
    print(f"llama.cpp converter {version}: ready in {CONVERTER_DIR}")
    return CONVERTER_SCRIPT


def check_table() -> list[tuple[str, str, bool]]:
    """(component, what was found, ok) for the end of prepare_venv."""
    rows = []
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
        rows.append(("torch", "MISSING", False))
        cuda = False
    for package in ("transformers", "peft", "trl", "datasets", "accelerate"):
        version = installed_version(package)
        rows.append((package, version or "MISSING", version is not None))
    bnb = installed_version("bitsandbytes")
    rows.append(("bitsandbytes", (bnb or "MISSING") + ("" if cuda else " (used on GPU only)"), bnb is not None or not cuda))
    try:
        from ftg.llama_runtime import runtime_version

        rows.append(("llama_cpp", runtime_version(), True))
    except Exception as exc:  # a failed build leaves an import error that the user must see
        rows.append(("llama_cpp", f"MISSING ({type(exc).__name__})", False))
    found = CONVERTER_SCRIPT.exists()
    rows.append(("converter", str(CONVERTER_SCRIPT) if found else "MISSING", found))
    return rows


def print_check_table(rows) -> bool:
    width = max(len(name) for name, _, _ in rows)
    print("\nSetup check:")
    for name, found, ok in rows:
        print(f"  {'OK ' if ok else 'BAD'}  {name:<{width}}  {found}")
    return all(ok for _, _, ok in rows)


def run(check_only: bool = False) -> bool:
    if not check_only:
        ensure_converter()
    return print_check_table(check_table())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only print the check table")
    args = parser.parse_args(argv)

    def body() -> int:
        if run(args.check):
            print("\nAll set. Next: download_model (or run_demo for the offline demo).")
            return 0
        raise UserError("some parts are missing (BAD above). Run prepare_venv again and read its messages.")

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
