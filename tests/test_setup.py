"""The setup's decisions, run for real: the CUDA choice for a llama.cpp build, and that every package prepare_venv
installs on Windows (and the Linux GPU set) comes as a wheel, so no compiler is needed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftg.config import PROJECT_ROOT

SETUP_TOOLS = PROJECT_ROOT / "scripts" / "setup_tools.py"


def fake_tool(folder: Path, name: str, output: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / name
    tool.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\n")
    tool.chmod(0o755)


def cuda_decision(path: Path, cuda_path: Path) -> str:
    env = {**os.environ, "PATH": f"{path}{os.pathsep}{Path(sys.executable).parent}", "CUDA_PATH": str(cuda_path)}
    result = subprocess.run([sys.executable, str(SETUP_TOOLS), "--cuda-decision"], capture_output=True, text=True,
                            env=env, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_fake_nvcc_without_gpu_takes_the_cpu_build(tmp_path):
    """The machine of issue 12: nvcc on the PATH, no GPU. The CPU path is taken and the reason names both."""
    fake_tool(tmp_path / "bin", "nvcc")
    decision = cuda_decision(tmp_path / "bin", tmp_path / "no-cuda")
    assert decision.startswith("cpu: no NVIDIA GPU found"), decision
    assert str(tmp_path / "bin" / "nvcc") in decision


def test_gpu_and_nvcc_without_cublas_takes_the_cpu_build(tmp_path):
    cuda = tmp_path / "cuda"
    fake_tool(cuda / "bin", "nvcc")
    fake_tool(cuda / "bin", "nvidia-smi", "NVIDIA Test GPU")
    assert cuda_decision(cuda / "bin", cuda).startswith("cpu: GPU NVIDIA Test GPU and nvcc found, but cuBLAS is missing")
    (cuda / "include").mkdir()
    (cuda / "include" / "cublas_v2.h").write_text("")
    assert cuda_decision(cuda / "bin", cuda) == "cuda"


def test_prepare_venv_builds_with_cuda_only_on_that_decision():
    """The launchers use the decision above, compile nothing by default, and never stop on llama.cpp."""
    script = (PROJECT_ROOT / "prepare_venv.sh").read_text()
    assert "command -v nvcc" not in script
    assert script.count("-DGGML_CUDA=on") == 1
    cuda_branch = script[script.index('if [ "$decision" = "cuda" ]'):]
    assert cuda_branch.index("-DGGML_CUDA=on") < cuda_branch.index("else")
    assert 'FTG_BUILD_LLAMA_CPP:-0}" = "1"' in script
    for launcher in ("prepare_venv.sh", "prepare_venv.bat"):
        text = (PROJECT_ROOT / launcher).read_text()
        assert "--only-binary :all:" in text and "LLAMA_RUNTIME" in text


def pinned(launcher: str, name: str) -> str:
    text = (PROJECT_ROOT / launcher).read_text()
    return re.search(rf'{name}="?([^"\r\n]+)"', text).group(1)


def install_set(launcher: str) -> list[str]:
    """What the launcher installs: torch, requirements.txt, the llama.cpp runtime."""
    return [f"torch=={pinned(launcher, 'TORCH_VERSION')}", "-r", str(PROJECT_ROOT / "requirements.txt"),
            pinned(launcher, "LLAMA_RUNTIME").strip()]


def resolve(tmp_path: Path, platform: str, python: str, packages: list[str]) -> dict[str, str]:
    """A resolver run for another platform, wheels only: {name: version}. Fails if anything would be built.

    uv's resolver, because `pip install --dry-run --platform win_amd64` still evaluates environment markers for
    the machine it runs on: it asked for torch's Linux-only nvidia-nccl-cu13 on a Windows resolve (pip 23.2.1).
    """
    requirements = tmp_path / "packages.txt"
    lines, items = [], iter(packages)
    for item in items:
        lines.append(f"-r {next(items)}" if item == "-r" else item)
    requirements.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "uv", "pip", "compile", "--quiet", "--no-header", "--python-platform", platform,
         "--python-version", python, "--only-binary", ":all:", "--index-url", "https://pypi.org/simple",
         str(requirements)],
        capture_output=True, text=True, timeout=900,
    )
    seconds = time.monotonic() - started
    if result.returncode != 0 and re.search(r"(?i)network|dns|connect", result.stderr) and "pypi.org" in result.stderr:
        pytest.skip("PyPI is not reachable from here")
    assert result.returncode == 0, f"not every package has a {platform} wheel for Python {python}:\n{result.stderr}"
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", result.stdout, re.MULTILINE))
    print(f"\n{platform} cp{python.replace('.', '')}: {len(pins)} packages, all wheels, resolved in {seconds:.0f} s")
    print(" ".join(f"{name}=={version}" for name, version in sorted(pins.items())))
    return {name.lower(): version for name, version in pins.items()}


# slow: each resolves about 70 packages against PyPI (3-10 s, the network's time); CI runs them.
@pytest.mark.slow
@pytest.mark.parametrize("python", ["3.11", "3.12"])
def test_windows_install_needs_no_compiler(tmp_path, python):
    """Everything prepare_venv.bat installs has a win_amd64 wheel (torch from PyPI: the CPU build of the same
    version; the CUDA build comes from download.pytorch.org, which this test cannot reach)."""
    wheels = resolve(tmp_path, "x86_64-pc-windows-msvc", python, install_set("prepare_venv.bat"))
    assert wheels["llama-cpp-py-sync"] == "0.11739"
    assert wheels["torch"] == pinned("prepare_venv.bat", "TORCH_VERSION")
    assert not any(name.startswith("nvidia-") for name in wheels)


@pytest.mark.slow
def test_linux_gpu_install_needs_no_compiler(tmp_path):
    """The Linux GPU set: PyPI's torch (a CUDA build, with its nvidia-* wheels), bitsandbytes, the rest."""
    wheels = resolve(tmp_path, "x86_64-manylinux_2_28", "3.11", install_set("prepare_venv.sh"))
    assert any(name.startswith("nvidia-") for name in wheels), "PyPI's Linux torch should bring CUDA libraries"
    assert "bitsandbytes" in wheels and "llama-cpp-py-sync" in wheels
