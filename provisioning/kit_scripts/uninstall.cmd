@echo off
rem Runs uninstall.ps1 from this folder (see install.cmd). Add -RemoveData to delete the data folder.
powershell.exe -NoProfile -ExecutionPolicy Bypass -File "%~dp0uninstall.ps1" %*
exit /b %ERRORLEVEL%
