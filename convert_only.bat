@echo off
rem Step 6 again: redo only the GGUF conversion and checks from output\merged (no merge).
chcp 65001 >nul
set "FTG_SCRIPT=pipeline.py"
call "%~dp0scripts\launch.bat" export --skip-merge %*
set "FTG_EXIT=%ERRORLEVEL%"
pause
exit /b %FTG_EXIT%
