<#
.SYNOPSIS
    Removes a Liandong village node installed by install.ps1.

.DESCRIPTION
    Stops the node, removes its Task Scheduler task, the desktop shortcut and the program
    (virtual environment). The data folder (database, keys, material files) is kept unless
    -RemoveData is given; even then it is refused while cases have not reached the hub
    (pending, or held by the township), unless -Force.

.EXAMPLE
    uninstall.cmd
.EXAMPLE
    uninstall.cmd -RemoveData
#>
[CmdletBinding()]
param(
    [string]$InstallDir = (Join-Path $env:LOCALAPPDATA "Liandong"),
    [switch]$RemoveData,
    [switch]$Force
)

$ErrorActionPreference = "Stop"
$StateFile = Join-Path $InstallDir "install.json"

function Say([string]$Text) { Write-Host "[联动] $Text" }
function Fail([string]$Text) {
    Write-Host "[联动] 卸载未完成：$Text" -ForegroundColor Red
    exit 1
}

if (-not (Test-Path $StateFile)) { Fail "未找到安装记录 $StateFile（是否装在别的目录？用 -InstallDir 指定）。" }
$State = Get-Content -Raw -Encoding UTF8 -Path $StateFile | ConvertFrom-Json
$Liandong = Join-Path $State.venv "Scripts\liandong.exe"

# Unsent cases are checked before anything is removed.
if ($RemoveData -and -not $Force -and (Test-Path $Liandong) -and (Test-Path (Join-Path $State.data_dir "config.py"))) {
    $status = & $Liandong node status --data $State.data_dir | ConvertFrom-Json
    $unsent = [int]$status.outbox.pending + [int]$status.outbox.custody
    if ($unsent -gt 0) {
        Fail ("还有 $unsent 条记录未被市中心确认收到，删除数据会丢失这些办件。" +
              "请先联网同步（或用U盘包送到乡镇站），或加 -Force 强制删除。")
    }
}

Stop-ScheduledTask -TaskName $State.task -ErrorAction SilentlyContinue
Unregister-ScheduledTask -TaskName $State.task -Confirm:$false -ErrorAction SilentlyContinue
# The node started by the task, found by its program path (never by a process name).
Get-Process | Where-Object { $_.Path -and $_.Path.StartsWith($State.venv, [StringComparison]::OrdinalIgnoreCase) } |
    Stop-Process -Force
Say "已停止节点并删除自动启动任务。"

if (Test-Path $State.shortcut) { Remove-Item -Force $State.shortcut }
if (Test-Path $State.venv) { Remove-Item -Recurse -Force $State.venv }
Remove-Item -Force $StateFile

if ($RemoveData) {
    if (Test-Path $State.data_dir) { Remove-Item -Recurse -Force $State.data_dir }
    Say "已删除数据目录 $($State.data_dir)。"
} else {
    Say "数据目录已保留：$($State.data_dir)（密钥和办件都在其中；重新安装时会沿用）。"
}
Say "卸载完成。"
