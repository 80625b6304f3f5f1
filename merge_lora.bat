@echo off
rem Step 5: merge the best LoRA of the latest run into the base model (output\merged).
chcp 65001 >nul
set "FTG_SCRIPT=merge_lora.py"
call "%~dp0scripts\launch.bat" %*
set "FTG_EXIT=%ERRORLEVEL%"
pause
exit /b %FTG_EXIT%
