@echo off
rem Step 1: set up everything once: .venv, torch (CUDA build with an NVIDIA driver, else CPU), the pinned
rem requirements, llama-cpp-python and llama.cpp's GGUF converter. Running it again is quick and says so.
rem Override the torch download with: set FTG_TORCH_INDEX=<pip index URL>
chcp 65001 >nul
setlocal
cd /d "%~dp0"
set "TORCH_VERSION=2.13.0"
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

echo Installing llama-cpp-python %LLAMA_CPP_VERSION%: trying a prebuilt CPU wheel first...
"%VPY%" -m pip install --disable-pip-version-check --only-binary llama-cpp-python --extra-index-url https://abetlen.github.io/llama-cpp-python/whl/cpu "llama-cpp-python==%LLAMA_CPP_VERSION%"
if errorlevel 1 (
    echo No prebuilt wheel. Compiling llama-cpp-python from source: 5-15 minutes, once. Please wait.
    "%VPY%" -m pip install --disable-pip-version-check "llama-cpp-python==%LLAMA_CPP_VERSION%"
)
if errorlevel 1 (
    echo ERROR: llama-cpp-python did not compile: a C++ compiler is missing. Install "Visual Studio Build Tools 2022"
    echo with the "Desktop development with C++" workload, and CMake ^(winget install Kitware.CMake^), then run again.
    goto :failed
)

"%VPY%" scripts\setup_tools.py || goto :failed
for /f %%h in ('%VPY% -c "%STAMP_CMD%"') do set "STAMP=%%h"
> ".venv\ftg-setup.stamp" echo %STAMP%
goto :done

:already_set_up
if not "%OLD_STAMP%"=="%STAMP%" exit /b 1
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
