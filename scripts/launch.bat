@echo off
rem Runs one stage script with the project's .venv, or without one with the portable Python that prepare_venv.bat
rem puts in python\ when no Python is installed; the top-level launchers call this.
rem Usage: set "FTG_SCRIPT=NAME.py" then call scripts\launch.bat [arguments for the script...]
setlocal
set "ROOT=%~dp0.."
set "FTG_PYTHON=%ROOT%\.venv\Scripts\python.exe"
if not exist "%FTG_PYTHON%" set "FTG_PYTHON=%ROOT%\python\python.exe"
if not exist "%FTG_PYTHON%" (
    echo The environment is not set up yet. Run prepare_venv.bat first.
    exit /b 1
)
set "PYTHONUTF8=1"
"%FTG_PYTHON%" "%ROOT%\scripts\%FTG_SCRIPT%" %*
exit /b %ERRORLEVEL%
