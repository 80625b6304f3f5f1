@echo off
rem Step 1: set up everything once: .venv, torch (CUDA build with an NVIDIA driver, else CPU), the pinned
rem requirements, the prebuilt llama.cpp runtime and llama.cpp's GGUF converter. Nothing is compiled, so no
rem Visual Studio is needed. If the llama.cpp runtime cannot be installed, setup still finishes: training does not need it.
rem Override the torch download with: set FTG_TORCH_INDEX=<pip index URL>
rem set FTG_BUILD_LLAMA_CPP=1 also compiles llama-cpp-python (needs Visual Studio Build Tools and CMake).
chcp 65001 >nul
setlocal
rem Python writes UTF-8, not the ANSI code page, into pipes and files: pip --version >nul crashes with
rem UnicodeEncodeError under cp1252 when the project's path has Cyrillic in it.
set "PYTHONUTF8=1"
cd /d "%~dp0"
set "TORCH_VERSION=2.13.0"
set "LLAMA_RUNTIME=llama-cpp-py-sync==0.11739"
set "LLAMA_CPP_VERSION=0.3.36"
set "VPY=.venv\Scripts\python.exe"
set "ENV_DIR=.venv"
rem With no Python installed, the official embeddable CPython goes into python\ (see :portable_python). It has no
rem venv module, so python\ itself is the environment, and scripts\launch.bat uses it when .venv is absent.
set "PORTABLE_VERSION=3.11.9"
set "PORTABLE_URL=https://www.python.org/ftp/python/3.11.9/python-3.11.9-embed-amd64.zip"
set "PORTABLE_SHA256=009d6bf7e3b2ddca3d784fa09f90fe54336d5b60f0e0f305c37f400bf83cfd3b"
rem The embeddable Python has no pip: its wheel is unpacked into python\Lib\site-packages.
set "PIP_WHEEL=pip-25.3-py3-none-any.whl"
set "PIP_WHEEL_SHA256=9655943313a94722b7774661c21049070f6bbb0a1516bf02f7c8d5d9201514cd"
if not exist "%VPY%" if exist "python\python.exe" set "ENV_DIR=python"
if "%ENV_DIR%"=="python" set "VPY=python\python.exe"
rem for /f runs its command with cmd /c, which drops the first and the last quote of a command that starts with one:
rem so %VPY% (relative, no spaces) stays unquoted there.
set "STAMP_CMD=import hashlib;print(hashlib.sha256(open('requirements.txt','rb').read()+open('prepare_venv.bat','rb').read()).hexdigest()[:16])"

if exist "%VPY%" (
    for /f %%h in ('%VPY% -c "%STAMP_CMD%"') do set "STAMP=%%h"
    if exist "%ENV_DIR%\ftg-setup.stamp" (
        set /p OLD_STAMP=<"%ENV_DIR%\ftg-setup.stamp"
        call :already_set_up && goto :done
    )
)

if "%ENV_DIR%"=="python" goto :have_python
set "PY="
for %%v in (3.12 3.11 3.10) do (
    if not defined PY (
        py -%%v -c "import sys" >nul 2>&1 && set "PY=py -%%v"
    )
)
if not defined PY (
    python -c "import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)" >nul 2>&1 && set "PY=python"
)
if defined PY goto :make_venv
call :portable_python || goto :failed
set "ENV_DIR=python"
set "VPY=python\python.exe"
goto :have_python

:make_venv
echo Using %PY%
if not exist "%VPY%" (
    %PY% -m venv .venv || (echo ERROR: could not create .venv. & goto :failed)
)
:have_python
"%VPY%" -m pip install -q --disable-pip-version-check --upgrade pip

rem FTG_TORCH=skip installs no torch (the wine test does: wine 8.0 cannot import torch without KMP_AFFINITY=disabled).
if /i "%FTG_TORCH%"=="skip" (echo Skipping torch ^(FTG_TORCH=skip^): training and merging will not run. & goto :after_torch)
where nvidia-smi >nul 2>&1
if "%ERRORLEVEL%"=="0" (
    echo NVIDIA GPU found. Installing the CUDA build of torch.
    if not defined FTG_TORCH_INDEX set "FTG_TORCH_INDEX=https://download.pytorch.org/whl/cu128"
) else (
    echo No NVIDIA GPU found. Installing the CPU build of torch ^(the demo runs; real training needs a GPU^).
    if not defined FTG_TORCH_INDEX set "FTG_TORCH_INDEX=https://download.pytorch.org/whl/cpu"
)
"%VPY%" -m pip install --disable-pip-version-check --index-url "%FTG_TORCH_INDEX%" "torch==%TORCH_VERSION%" || (
    "%VPY%" -m pip install --disable-pip-version-check "torch==%TORCH_VERSION%" || goto :failed
)

:after_torch
echo Installing the pinned libraries (requirements.txt)...
"%VPY%" -m pip install --disable-pip-version-check -r requirements.txt || goto :failed

echo Installing the llama.cpp runtime (%LLAMA_RUNTIME%, a prebuilt wheel: nothing to compile)...
"%VPY%" -m pip install -q --disable-pip-version-check --only-binary :all: "%LLAMA_RUNTIME%"
if errorlevel 1 echo llama.cpp runtime: NOT installed ^(no wheel for this machine, or no connection^). Training works without it; see the table below.

if "%FTG_BUILD_LLAMA_CPP%"=="1" call :build_llama_cpp

"%VPY%" scripts\setup_tools.py || goto :failed
for /f %%h in ('%VPY% -c "%STAMP_CMD%"') do set "STAMP=%%h"
> "%ENV_DIR%\ftg-setup.stamp" echo %STAMP%
goto :done

:build_llama_cpp
rem Opt-in only. CUDA only when setup_tools finds a GPU, nvcc and cuBLAS; a failed CUDA build falls back to the CPU.
for /f "delims=" %%d in ('"%VPY%" scripts\setup_tools.py --cuda-decision') do set "DECISION=%%d"
echo Compiling llama-cpp-python %LLAMA_CPP_VERSION% (FTG_BUILD_LLAMA_CPP=1): 5-15 minutes. Decision: %DECISION%
if "%DECISION%"=="cuda" (
    set "CMAKE_ARGS=-DGGML_CUDA=on"
    "%VPY%" -m pip install --disable-pip-version-check --no-cache-dir "llama-cpp-python==%LLAMA_CPP_VERSION%" && exit /b 0
    echo The CUDA build of llama-cpp-python failed ^(messages above^); building the CPU one instead.
)
set "CMAKE_ARGS=-DGGML_CUDA=off"
"%VPY%" -m pip install --disable-pip-version-check --no-cache-dir "llama-cpp-python==%LLAMA_CPP_VERSION%" && exit /b 0
echo llama-cpp-python did not compile ^(the messages above say why; usually Visual Studio Build Tools 2022 with "Desktop development with C++", or CMake, is missing^). Setup goes on without it: it is optional.
exit /b 0

:portable_python
echo Python 3.10-3.13 was not found.
set "ANSWER=%FTG_PORTABLE_PYTHON%"
if not defined ANSWER (
    choice /c YN /t 30 /d Y /m "Set up Python %PORTABLE_VERSION% in this folder (python\, 11 MB; deleting the folder removes it)? In 30 s: Y"
    if errorlevel 2 set "ANSWER=N"
)
if /i "%ANSWER%"=="N" (
    echo Install Python 3.11 from python.org ^(tick "Add to PATH"^) and run prepare_venv.bat again.
    exit /b 1
)
rem FTG_PYTHON_ZIP=<a local copy of the embeddable zip> for offline machines (and the wine test); else curl.exe
rem (in Windows 10 1803+ and 11) downloads it and certutil checks it against the pinned SHA-256.
set "ZIP=%FTG_PYTHON_ZIP%"
if not defined ZIP (
    set "ZIP=python-embed.zip"
    call :download "%PORTABLE_URL%" "python-embed.zip" %PORTABLE_SHA256% || exit /b 1
)
mkdir python 2>nul
tar -xf "%ZIP%" -C python || powershell -NoProfile -Command "Expand-Archive -LiteralPath '%ZIP%' -DestinationPath python -Force"
if not exist "python\python.exe" (echo ERROR: could not unpack "%ZIP%" into python\. & exit /b 1)
if not defined FTG_PYTHON_ZIP del "python-embed.zip"
rem The ._pth file is the embeddable Python's whole sys.path: "import site" turns on Lib\site-packages (pip's
rem target), and the script's own folder is never added, so ..\scripts is (the stage scripts import ftg from there).
for %%p in (python\python3*._pth) do (echo import site& echo ..\scripts)>> "%%p"
set "PIP_FILE=%FTG_PIP_WHEEL%"
if not defined PIP_FILE (
    set "PIP_FILE=python\%PIP_WHEEL%"
    call :download "https://files.pythonhosted.org/packages/py3/p/pip/%PIP_WHEEL%" "python\%PIP_WHEEL%" %PIP_WHEEL_SHA256% || exit /b 1
)
rem A wheel is a zip of what goes into site-packages. (Run from its own wheel, pip on Windows refuses to install
rem itself: "To modify pip, please run ... -m pip".)
mkdir python\Lib\site-packages 2>nul
tar -xf "%PIP_FILE%" -C python\Lib\site-packages || powershell -NoProfile -Command "Expand-Archive -LiteralPath '%PIP_FILE%' -DestinationPath python\Lib\site-packages -Force"
python\python.exe -m pip --version >nul || (echo ERROR: pip did not install. & exit /b 1)
echo Python %PORTABLE_VERSION% is set up in python\.
exit /b 0

:download
rem :download URL FILE SHA256: fetch with curl.exe, then compare certutil's SHA-256 (older Windows prints it spaced).
echo Downloading %~1 ...
curl.exe -L --fail --retry 3 -o "%~2" "%~1" || (echo ERROR: could not download %~1. Check the connection and run again. & exit /b 1)
set "GOT="
for /f "skip=1 delims=" %%h in ('certutil -hashfile "%~2" SHA256') do if not defined GOT set "GOT=%%h"
set "GOT=%GOT: =%"
if /i not "%GOT%"=="%~3" (
    echo ERROR: %~2 is not the expected file ^(SHA-256 %GOT%, expected %~3^). Delete it and run again.
    del "%~2"
    exit /b 1
)
exit /b 0

:already_set_up
if not "%OLD_STAMP%"=="%STAMP%" exit /b 1
rem Without the llama.cpp runtime it tries again, so "run prepare_venv again" helps.
"%VPY%" -c "import llama_cpp_py_sync" >nul 2>&1 || exit /b 1
"%VPY%" scripts\setup_tools.py --check || exit /b 1
echo Already set up. ^(Delete %ENV_DIR% to start over.^)
exit /b 0

:failed
echo Setup did not finish. Read the message above, fix it, and run prepare_venv.bat again.
pause
exit /b 1

:done
echo Ready. Next: download_model.bat
pause
exit /b 0
