@echo off
rem Step 4.1: watch training progress in TensorBoard.
chcp 65001 >nul
set "FTG_SCRIPT=check_tensorboard_runs.py"
call "%~dp0scripts\launch.bat" %*
set "FTG_EXIT=%ERRORLEVEL%"
pause
exit /b %FTG_EXIT%
