@echo off
rem Step 2: download a base Gemma model into models\ (menu), or --demo for the offline demo model.
chcp 65001 >nul
set "FTG_SCRIPT=download_model.py"
call "%~dp0scripts\launch.bat" %*
set "FTG_EXIT=%ERRORLEVEL%"
pause
exit /b %FTG_EXIT%
