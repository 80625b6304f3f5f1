@echo off
rem Step 7: talk to output\finetuned_gemma.gguf in the terminal (--compare shows the base model too).
chcp 65001 >nul
set "FTG_SCRIPT=chat.py"
call "%~dp0scripts\launch.bat" %*
set "FTG_EXIT=%ERRORLEVEL%"
pause
exit /b %FTG_EXIT%
