@echo off
rem The whole pipeline on the bundled sample data with the offline Gemma 3 270M demo model.
chcp 65001 >nul
set "FTG_SCRIPT=run_demo.py"
call "%~dp0scripts\launch.bat" %*
set "FTG_EXIT=%ERRORLEVEL%"
pause
exit /b %FTG_EXIT%
