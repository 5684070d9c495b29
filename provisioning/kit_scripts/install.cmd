@echo off
rem Runs install.ps1 from this folder; Windows blocks unsigned scripts by default, so the policy is
rem bypassed for this one process only. Arguments are passed through, e.g.
rem   install.cmd -Token LD1.130926100201.xxxx.yyyy -ParentUrl http://192.168.10.2:8601 -Name <name>
powershell.exe -NoProfile -ExecutionPolicy Bypass -File "%~dp0install.ps1" %*
exit /b %ERRORLEVEL%
