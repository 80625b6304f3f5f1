@echo off
rem Step 3: turn the chat exports in dataset\ into data\train_dataset.jsonl and data\eval_dataset.jsonl.
chcp 65001 >nul
set "FTG_SCRIPT=prepare_conversation_data.py"
call "%~dp0scripts\launch.bat" %*
set "FTG_EXIT=%ERRORLEVEL%"
pause
exit /b %FTG_EXIT%
