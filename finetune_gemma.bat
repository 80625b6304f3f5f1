@echo off
rem Step 4: train a LoRA on data\ (run it again to resume after a stop).
chcp 65001 >nul
set "FTG_SCRIPT=pipeline.py"
call "%~dp0scripts\launch.bat" train %*
set "FTG_EXIT=%ERRORLEVEL%"
pause
exit /b %FTG_EXIT%
