"""Issue 12: run the .bat launchers under a real cmd.exe (wine), with a stand-in python.exe, not only lint them.

The stand-in (tests/winstub/python_stub.c, built with mingw-w64) records its working folder and arguments and exits
with a chosen code. Each test copies the launchers into a folder whose name has a space and Cyrillic letters, puts the
stand-in where scripts/launch.bat looks for the venv's python, and starts a launcher from another folder the way a
user does from a cmd window. tests/winstub/install_wine.sh installs what is needed (.ci/run calls it); without it the
tests skip and say so.
"""

from __future__ import annotations

import ntpath
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STUB_SOURCE = REPO / "tests" / "winstub" / "python_stub.c"
WINE = shutil.which("wine64") or "/usr/lib/wine/wine64"
WINESERVER = shutil.which("wineserver") or "/usr/lib/wine/wineserver64"
MINGW_GCC = shutil.which("x86_64-w64-mingw32-gcc")
# wine 10.0's cmd.exe (see install_wine.sh): wine 8.0's own runs both sides of && and || and squashes call's exit codes.
CMD_EXE = Path(os.environ.get("FTG_WINE_CMD", "/opt/ftg-wine-cmd/cmd.exe"))
TIMEOUT_S = 60  # one launcher run takes about 0.15 s; a run that hangs (a pause waiting for a key) fails at this limit

pytestmark = pytest.mark.slow  # the .bat files under wine's cmd.exe (about 15 s, and wine must be installed)

LAUNCHERS = [
    "download_model", "prepare_dataset", "finetune_gemma", "check_tensorboard_runs",
    "merge_lora", "convert_to_gguf", "convert_only", "chat", "run_demo",
]
# What a user types after the launcher's name: a quoted value with a space, Cyrillic, an option.
USER_ARGS = ['"мои данные\\чат 1.json"', '"Привет, мир"', "--flag", "plain"]
USER_ARGV = ["мои данные\\чат 1.json", "Привет, мир", "--flag", "plain"]

# Runs the launcher named by FTG_TEST_BAT from FTG_TEST_CWD, as typed at a cmd prompt, with FTG_TEST_ARGS after it.
# Environment variables carry the Cyrillic and the spaces, so this file itself stays ASCII.
DRIVER = r"""@echo off
cd /d "%FTG_TEST_CWD%"
if "%FTG_TEST_MODE%"=="call" goto :call
"%FTG_TEST_BAT%" %FTG_TEST_ARGS%
exit /b
:call
call "%FTG_TEST_BAT%" %FTG_TEST_ARGS%
echo FTG_TEST_ERRORLEVEL=%ERRORLEVEL%
exit /b %ERRORLEVEL%
""".replace("\n", "\r\n")


def win(path: Path) -> str:
    """The Windows name wine gives a Linux path (drive Z: is /)."""
    return "Z:" + str(path).replace("/", "\\")


@dataclass
class Run:
    rc: int
    output: str
    calls: list[dict]  # one per stand-in run: {"cwd": str, "args": [str, ...]}


class Wine:
    """One wine prefix and wineserver for the whole session: wineboot takes seconds, a launcher run about 0.15 s."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {
            key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY", "WINEPATH")
        }
        self.env.update(
            WINEPREFIX=str(root / "prefix"), WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=",
            LANG="C.UTF-8", LC_ALL="C.UTF-8",  # wine decodes file names and arguments with the Linux locale
        )
        self.stub = root / "python.exe"
        self.driver = root / "driver.bat"
        self.driver.write_bytes(DRIVER.encode("ascii"))
        # Not named cmd.exe: wine would load its own builtin cmd.exe (8.0) instead of the file of that name.
        self.cmd = root / "cmd-wine10.exe"
        shutil.copy(CMD_EXE, self.cmd)

    def run(self, bat: Path, args: list[str] = (), cwd: Path | None = None, mode: str = "direct",
            stdin: str = "devnull", env: dict | None = None) -> Run:
        log = self.root / "calls.log"
        log.unlink(missing_ok=True)
        env = {**self.env, **(env or {})}
        env.update(FTG_STUB_LOG=win(log), FTG_TEST_BAT=win(bat), FTG_TEST_ARGS=" ".join(args),
                   FTG_TEST_CWD=win(cwd or bat.parent), FTG_TEST_MODE=mode)
        command = [WINE, win(self.cmd), "/c", win(self.driver)]
        # NUL, or a pipe already at its end. (A closed fd 0 is no case: wine itself then fails with "wine client
        # error:0: recvmsg: Socket operation on non-socket".)
        stdin_file = subprocess.DEVNULL if stdin == "devnull" else subprocess.PIPE
        proc = subprocess.Popen(command, env=env, cwd=self.root, stdin=stdin_file, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = proc.communicate(input=b"" if stdin == "eof" else None, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"{bat.name} did not finish in {TIMEOUT_S} s (stdin {stdin}); output:\n{out.decode(errors='replace')}")
        return Run(proc.returncode, out.decode("utf-8", errors="replace"), read_calls(log))


def read_calls(log: Path) -> list[dict]:
    calls = []
    if not log.exists():
        return calls
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.startswith("cwd="):
            calls.append({"cwd": line[4:], "args": []})
        elif line.startswith("arg="):
            calls[-1]["args"].append(line[4:])
    return calls


def boot_prefix(env: dict, root: Path) -> None:
    """Make env's WINEPREFIX with one wineserver for the session (-p: it stays up; the fixture's teardown runs
    wineserver -k). Without it each run started a wineserver and wine's services and waited for them to exit (about
    2.5 s a run), and a run that began while the last one's server was going down once gave no output at all (CI,
    stop 29). The services start here, writing to a file and not to a run's pipe, which Popen.communicate would
    otherwise wait on until the session ends."""
    start = time.monotonic()
    Path(env["WINEPREFIX"]).mkdir()
    subprocess.run([WINESERVER, "-p"], env=env, check=True, timeout=60)
    boot_log = root / "wineboot.log"
    with boot_log.open("wb") as log:
        boot = subprocess.run([WINE, "wineboot", "--init"], env=env, stdin=subprocess.DEVNULL, stdout=log,
                              stderr=subprocess.STDOUT, timeout=300)
    assert boot.returncode == 0, boot_log.read_text(errors="replace")
    print(f"\nwineboot: {time.monotonic() - start:.1f} s")


@pytest.fixture(scope="session")
def wine(tmp_path_factory):
    missing = [name for name, ok in [("wine64", os.access(WINE, os.X_OK)), ("x86_64-w64-mingw32-gcc", MINGW_GCC),
                                     (str(CMD_EXE), CMD_EXE.is_file())] if not ok]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: run tests/winstub/install_wine.sh (as root; .ci/run does)")
    wine = Wine(tmp_path_factory.mktemp("wine"))
    subprocess.run([MINGW_GCC, "-O2", "-Wall", "-o", str(wine.stub), str(STUB_SOURCE), "-lshell32"], check=True)
    boot_prefix(wine.env, wine.root)
    yield wine
    subprocess.run([WINESERVER, "-k"], env=wine.env, timeout=60)
    shutil.rmtree(wine.root / "prefix", ignore_errors=True)  # about 700 MB of copied DLLs


@pytest.fixture
def project(wine, tmp_path):
    """The launchers in a folder named with a space and Cyrillic, the stand-in as .venv\\Scripts\\python.exe."""
    root = tmp_path / "Мой проект"
    (root / "scripts").mkdir(parents=True)
    for bat in REPO.glob("*.bat"):
        shutil.copy(bat, root)
    shutil.copy(REPO / "scripts" / "launch.bat", root / "scripts")
    shutil.copy(REPO / "requirements.txt", root)
    (root / ".venv" / "Scripts").mkdir(parents=True)
    shutil.copy(wine.stub, root / ".venv" / "Scripts" / "python.exe")
    return root


@pytest.fixture
def elsewhere(tmp_path):
    """The user's current folder: not the project's, with a space and Cyrillic too."""
    path = tmp_path / "другая папка"
    path.mkdir()
    return path


def script_of(name: str) -> tuple[str, list[str]]:
    """The script and fixed arguments that NAME.sh runs: the .bat must run the same."""
    words = (REPO / f"{name}.sh").read_text(encoding="utf-8").split('launch.sh"', 1)[1].split()
    return words[0], [word for word in words[1:] if not word.startswith('"$@')]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_runs_its_script_with_the_users_arguments_from_another_folder(wine, project, elsewhere, name):
    """%~dp0 finds the project from any folder; %* passes spaces and Cyrillic through unchanged."""
    script, fixed = script_of(name)
    result = wine.run(project / f"{name}.bat", USER_ARGS, cwd=elsewhere)
    assert result.rc == 0, result.output
    assert len(result.calls) == 1, result.output
    call = result.calls[0]
    assert ntpath.normpath(call["args"][0]) == win(project / "scripts" / script)
    assert call["args"][1:] == fixed + USER_ARGV
    assert call["cwd"] == win(elsewhere), "like the .sh, the launcher keeps the user's folder"


@pytest.mark.parametrize("code", [0, 3])
@pytest.mark.parametrize("mode", ["direct", "call"])
def test_exit_code_of_the_script_is_the_launchers(wine, project, elsewhere, mode, code):
    """The script's exit code comes out of scripts\\launch.bat, chat.bat, and a caller's `call chat.bat`."""
    result = wine.run(project / "chat.bat", ["--x"], cwd=elsewhere, mode=mode, env={"FTG_STUB_EXIT": str(code)})
    assert len(result.calls) == 1, result.output
    assert result.rc == code, result.output
    if mode == "call":
        assert f"FTG_TEST_ERRORLEVEL={code}" in result.output


@pytest.mark.parametrize("stdin", ["devnull", "eof"])
def test_pause_does_not_hang_without_a_console(wine, project, elsewhere, stdin):
    """CI and scripts start launchers with no keyboard: pause must return at once, not wait for TIMEOUT_S."""
    start = time.monotonic()
    result = wine.run(project / "merge_lora.bat", cwd=elsewhere, stdin=stdin, env={"FTG_STUB_STDOUT": "script ran"})
    assert result.rc == 0, result.output
    assert "script ran" in result.output
    assert time.monotonic() - start < TIMEOUT_S / 2


def test_missing_venv_says_run_prepare_venv_first(wine, project, elsewhere):
    shutil.rmtree(project / ".venv")
    result = wine.run(project / "finetune_gemma.bat", ["--x"], cwd=elsewhere)
    assert "The environment is not set up yet. Run prepare_venv.bat first." in result.output
    assert result.rc == 1
    assert result.calls == []


@pytest.fixture
def py_launcher(wine):
    """The stand-in as `py` on the PATH: prepare_venv.bat's `py -3.12 -m venv .venv` then makes .venv from it."""
    folder = wine.root / "pylauncher"
    folder.mkdir(exist_ok=True)
    shutil.copy(wine.stub, folder / "py.exe")
    return {"WINEPATH": win(folder)}


def pip_installs(calls: list[dict]) -> list[list[str]]:
    return [call["args"] for call in calls if call["args"][:3] == ["-m", "pip", "install"]]


def test_prepare_venv_second_run_says_already_set_up(wine, project, elsewhere, py_launcher):
    shutil.rmtree(project / ".venv")
    stamp = {**py_launcher, "FTG_STUB_STDOUT": "0123456789abcdef"}  # what the stamp command prints

    first = wine.run(project / "prepare_venv.bat", cwd=elsewhere, env=stamp)
    assert first.rc == 0, first.output
    assert "Already set up" not in first.output
    assert ["-3.12", "-m", "venv", ".venv"] in [call["args"] for call in first.calls]
    assert ["-m", "pip", "install", "--disable-pip-version-check", "-r", "requirements.txt"] in pip_installs(first.calls)
    assert {call["cwd"] for call in first.calls} == {win(project)}, "prepare_venv.bat works in its own folder"
    assert (project / ".venv" / "ftg-setup.stamp").read_text().strip() == "0123456789abcdef"
    stamp_code = (project / "prepare_venv.bat").read_text(encoding="ascii").split('set "STAMP_CMD=')[1].split('"\n')[0]
    assert ["-c", stamp_code] in [call["args"] for call in first.calls], "the stamp's python code arrives whole"

    second = wine.run(project / "prepare_venv.bat", cwd=elsewhere, env=stamp)
    assert second.rc == 0, second.output
    assert "Already set up. (Delete .venv to start over.)" in second.output
    assert ["scripts\\setup_tools.py", "--check"] in [call["args"] for call in second.calls]
    assert pip_installs(second.calls) == [], "a second run installs nothing"


@pytest.mark.parametrize("change", ["stamp differs", "check fails"])
def test_prepare_venv_sets_up_again_when_something_changed(wine, project, elsewhere, py_launcher, change):
    """A changed requirements.txt (another stamp) or a failing `setup_tools.py --check` means: install again."""
    shutil.rmtree(project / ".venv")
    stamp = {**py_launcher, "FTG_STUB_STDOUT": "0123456789abcdef"}
    assert wine.run(project / "prepare_venv.bat", cwd=elsewhere, env=stamp).rc == 0
    if change == "stamp differs":
        again = {**stamp, "FTG_STUB_STDOUT": "fedcba9876543210"}
    else:
        again = {**stamp, "FTG_STUB_EXIT": "1", "FTG_STUB_EXIT_ARG": "--check"}

    second = wine.run(project / "prepare_venv.bat", cwd=elsewhere, env=again)
    assert second.rc == 0, second.output
    assert "Already set up" not in second.output
    assert ["-m", "pip", "install", "--disable-pip-version-check", "-r", "requirements.txt"] in pip_installs(second.calls)
