@echo off
rem Runs one stage script with the project's .venv; the top-level launchers call this.
rem Usage: set "FTG_SCRIPT=NAME.py" then call scripts\launch.bat [arguments for the script...]
setlocal
set "ROOT=%~dp0.."
if not exist "%ROOT%\.venv\Scripts\python.exe" (
    echo The environment is not set up yet. Run prepare_venv.bat first.
    exit /b 1
)
set "PYTHONUTF8=1"
"%ROOT%\.venv\Scripts\python.exe" "%ROOT%\scripts\%FTG_SCRIPT%" %*
exit /b %ERRORLEVEL%
