@echo off
rem Studio: the local web page for every step (model, data, train, export, talk); opens the browser.
chcp 65001 >nul
set "FTG_SCRIPT=studio.py"
call "%~dp0scripts\launch.bat" %*
set "FTG_EXIT=%ERRORLEVEL%"
pause
exit /b %FTG_EXIT%
