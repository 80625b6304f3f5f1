@echo off
rem Step 6: merge if needed, convert to GGUF, quantize and check the result (output\finetuned_gemma.gguf).
chcp 65001 >nul
set "FTG_SCRIPT=pipeline.py"
call "%~dp0scripts\launch.bat" export %*
set "FTG_EXIT=%ERRORLEVEL%"
pause
exit /b %FTG_EXIT%
