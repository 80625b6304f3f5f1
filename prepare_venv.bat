@echo off
rem Step 1: set up everything once: .venv, torch (CUDA build with an NVIDIA driver, else CPU), the pinned
rem requirements, the prebuilt llama.cpp runtime and llama.cpp's GGUF converter. Nothing is compiled, so no
rem Visual Studio is needed. If the llama.cpp runtime cannot be installed, setup still finishes: training does not need it.
rem Override the torch download with: set FTG_TORCH_INDEX=<pip index URL>
rem set FTG_BUILD_LLAMA_CPP=1 also compiles llama-cpp-python (needs Visual Studio Build Tools and CMake).
chcp 65001 >nul
setlocal
cd /d "%~dp0"
set "TORCH_VERSION=2.13.0"
set "LLAMA_RUNTIME=llama-cpp-py-sync==0.11739"
set "LLAMA_CPP_VERSION=0.3.36"
set "VPY=.venv\Scripts\python.exe"
rem for /f runs its command with cmd /c, which drops the first and the last quote of a command that starts with one:
rem so %VPY% (relative, no spaces) stays unquoted there.
set "STAMP_CMD=import hashlib;print(hashlib.sha256(open('requirements.txt','rb').read()+open('prepare_venv.bat','rb').read()).hexdigest()[:16])"

if exist "%VPY%" (
    for /f %%h in ('%VPY% -c "%STAMP_CMD%"') do set "STAMP=%%h"
    if exist ".venv\ftg-setup.stamp" (
        set /p OLD_STAMP=<".venv\ftg-setup.stamp"
        call :already_set_up && goto :done
    )
)

set "PY="
for %%v in (3.12 3.11 3.10) do (
    if not defined PY (
        py -%%v -c "import sys" >nul 2>&1 && set "PY=py -%%v"
    )
)
if not defined PY (
    python -c "import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)" >nul 2>&1 && set "PY=python"
)
if not defined PY (
    echo ERROR: Python 3.10-3.13 not found. Install Python 3.11 from python.org ^(tick "Add to PATH"^) and run again.
    goto :failed
)
echo Using %PY%

if not exist "%VPY%" (
    %PY% -m venv .venv || (echo ERROR: could not create .venv. & goto :failed)
)
"%VPY%" -m pip install -q --disable-pip-version-check --upgrade pip

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

echo Installing the pinned libraries (requirements.txt)...
"%VPY%" -m pip install --disable-pip-version-check -r requirements.txt || goto :failed

echo Installing the llama.cpp runtime (%LLAMA_RUNTIME%, a prebuilt wheel: nothing to compile)...
"%VPY%" -m pip install -q --disable-pip-version-check --only-binary :all: "%LLAMA_RUNTIME%"
if errorlevel 1 echo llama.cpp runtime: NOT installed ^(no wheel for this machine, or no connection^). Training works without it; see the table below.

if "%FTG_BUILD_LLAMA_CPP%"=="1" call :build_llama_cpp

"%VPY%" scripts\setup_tools.py || goto :failed
for /f %%h in ('%VPY% -c "%STAMP_CMD%"') do set "STAMP=%%h"
> ".venv\ftg-setup.stamp" echo %STAMP%
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

:already_set_up
if not "%OLD_STAMP%"=="%STAMP%" exit /b 1
rem Without the llama.cpp runtime it tries again, so "run prepare_venv again" helps.
"%VPY%" -c "import llama_cpp_py_sync" >nul 2>&1 || exit /b 1
"%VPY%" scripts\setup_tools.py --check || exit /b 1
echo Already set up. ^(Delete .venv to start over.^)
exit /b 0

:failed
echo Setup did not finish. Read the message above, fix it, and run prepare_venv.bat again.
pause
exit /b 1

:done
pause
exit /b 0
