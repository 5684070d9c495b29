<#
.SYNOPSIS
    Installs a Liandong village node from this offline kit: no internet needed on the PC.

.DESCRIPTION
    1. Finds 64-bit Python of the kit's minor version (or runs the python.org installer
       shipped in the kit, if any).
    2. Creates a virtual environment and installs liandong from the kit's wheelhouse
       (pip --no-index --find-links).
    3. Enrols the node with the token from the hub admin (liandong node init), unless the
       data folder is already enrolled (then this is an upgrade).
    4. Restricts the data folder to this user, SYSTEM and Administrators (keys live there).
    5. Registers a Task Scheduler task that starts the village node with waitress at logon,
       on 127.0.0.1, restarting it if it stops; starts it now.
    6. Puts a shortcut to the village page on the desktop.
    Run it as the Windows user the village agent logs on with (no administrator rights needed).

.EXAMPLE
    install.cmd -Token LD1.130926100201.xxxx.yyyy -ParentUrl http://192.168.10.2:8601 -Name 东关村便民服务室
.EXAMPLE
    install.cmd          # upgrade: a newer kit over an enrolled installation
#>
[CmdletBinding()]
param(
    [string]$Token = "",
    [string]$ParentUrl = "",
    [string]$Name = "",
    [string]$InstallDir = (Join-Path $env:LOCALAPPDATA "Liandong"),
    [string]$DataDir = "",
    [int]$Port = 8602
)

$ErrorActionPreference = "Stop"
$Kit = $PSScriptRoot
$Info = Get-Content -Raw -Encoding UTF8 -Path (Join-Path $Kit "kit.json") | ConvertFrom-Json
$TaskName = "Liandong village node"
$StateFile = Join-Path $InstallDir "install.json"
$Venv = Join-Path $InstallDir "venv"

function Say([string]$Text) { Write-Host "[联动] $Text" }
function Fail([string]$Text) {
    Write-Host "[联动] 安装未完成：$Text" -ForegroundColor Red
    exit 1
}

function Test-Python([string]$Exe) {
    # The interpreter's path if it is 64-bit CPython of the kit's minor version, else "".
    $probe = "import sys, struct; ok = sys.version_info[:2] == tuple(map(int, '$($Info.python)'.split('.'))) " +
             "and struct.calcsize('P') == 8; print(sys.executable if ok else '')"
    $previous = $ErrorActionPreference
    $ErrorActionPreference = "Continue"
    try {
        $out = & $Exe -c $probe 2>$null
        if ($LASTEXITCODE -eq 0 -and $out) { return ([string]$out).Trim() }
    } catch {
    } finally {
        $ErrorActionPreference = $previous
    }
    return ""
}

function Find-Python {
    $previous = $ErrorActionPreference
    $ErrorActionPreference = "Continue"
    try {
        if (Get-Command py.exe -ErrorAction SilentlyContinue) {
            $out = & py.exe "-$($Info.python)-64" -c "import sys; print(sys.executable)" 2>$null
            if ($LASTEXITCODE -eq 0 -and $out) {
                $exe = ([string]$out).Trim()
                $found = Test-Python $exe
                if ($found) { return $found }
            }
        }
    } catch {
    } finally {
        $ErrorActionPreference = $previous
    }
    $candidates = @(
        (Join-Path $env:LOCALAPPDATA ("Programs\Python\Python" + $Info.python.Replace(".", "") + "\python.exe")),
        (Join-Path $env:ProgramFiles ("Python" + $Info.python.Replace(".", "") + "\python.exe"))
    )
    foreach ($command in @("python.exe", "python3.exe")) {
        $cmd = Get-Command $command -ErrorAction SilentlyContinue
        # The WindowsApps "python.exe" only opens the Microsoft Store.
        if ($cmd -and $cmd.Source -notlike "*\WindowsApps\*") { $candidates += $cmd.Source }
    }
    foreach ($exe in $candidates) {
        if ($exe -and (Test-Path $exe)) {
            $found = Test-Python $exe
            if ($found) { return $found }
        }
    }
    return ""
}

function Stop-Node {
    # An upgrade replaces files the running node holds open (Windows locks them): stop it first.
    Stop-ScheduledTask -TaskName $TaskName -ErrorAction SilentlyContinue
    Get-Process | Where-Object { $_.Path -and $_.Path.StartsWith($Venv, [StringComparison]::OrdinalIgnoreCase) } |
        Stop-Process -Force
}

# ------------------------------------------------------------------ 1. Python
$Python = Find-Python
if (-not $Python -and $Info.python_installer) {
    $installer = Join-Path $Kit $Info.python_installer
    Say "本机没有 64 位 Python $($Info.python)，正在安装 $($Info.python_installer)（约需几分钟）…"
    $p = Start-Process -FilePath $installer -Wait -PassThru -ArgumentList @(
        "/quiet", "InstallAllUsers=0", "PrependPath=0", "Include_launcher=1", "Include_test=0", "Include_doc=0")
    if ($p.ExitCode -ne 0) { Fail "Python 安装程序退出码 $($p.ExitCode)" }
    $Python = Find-Python
}
if (-not $Python) {
    Fail ("本机没有 64 位 Python $($Info.python)。请先安装 Python $($Info.python)（64 位，python.org），" +
          "或在制作安装包时用 --python-installer 附上安装程序。Windows 10 及以上；Windows 8.1 仅支持 Python 3.11/3.12。")
}
Say "使用 Python：$Python"

# ------------------------------------------------------------------ 2. venv + wheels
New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
Stop-Node
if (Test-Path (Join-Path $Venv "Scripts\python.exe")) {
    $existing = Test-Python (Join-Path $Venv "Scripts\python.exe")
    if (-not $existing) {
        Say "原有运行环境的 Python 版本不同，重新创建。"
        Remove-Item -Recurse -Force $Venv
    }
}
if (-not (Test-Path (Join-Path $Venv "Scripts\python.exe"))) {
    & $Python -m venv $Venv
    if ($LASTEXITCODE -ne 0) { Fail "创建虚拟环境失败：$Venv" }
}
$VenvPython = Join-Path $Venv "Scripts\python.exe"
$Liandong = Join-Path $Venv "Scripts\liandong.exe"
$LiandongW = Join-Path $Venv "Scripts\liandongw.exe"
Say "正在从安装包离线安装联动 $($Info.liandong)…"
& $VenvPython -m pip install --disable-pip-version-check --no-index --find-links (Join-Path $Kit "wheelhouse") `
    --upgrade "liandong==$($Info.liandong)"
if ($LASTEXITCODE -ne 0) { Fail "pip 安装失败（安装包不完整或与本机 Python 不符）" }

# ------------------------------------------------------------------ 3. enrolment
$previousState = $null
if (Test-Path $StateFile) {
    $previousState = Get-Content -Raw -Encoding UTF8 -Path $StateFile | ConvertFrom-Json
}
if (-not $DataDir) {
    if ($Token) {
        # LD1.<区划代码>.<secret>.<root kid prefix>
        $DataDir = Join-Path $InstallDir ($Token.Split(".")[1])
    } elseif ($previousState) {
        $DataDir = $previousState.data_dir
    } else {
        Fail "首次安装须提供 -Token、-ParentUrl 和 -Name（令牌由市中心管理员发放）。"
    }
}
if (Test-Path (Join-Path $DataDir "config.py")) {
    Say "数据目录已登记，保留原有数据：$DataDir"
} else {
    if (-not ($Token -and $ParentUrl -and $Name)) {
        Fail "首次安装须提供 -Token、-ParentUrl（乡镇便民服务站地址）和 -Name（本村便民服务室名称）。"
    }
    Say "正在通过乡镇站向市中心登记本机…"
    & $Liandong node init --data $DataDir --token $Token --parent-url $ParentUrl --name $Name
    if ($LASTEXITCODE -ne 0) { Fail "登记未成功：请核对令牌（是否过期或已用过）和乡镇站地址，乡镇站须联网。" }
}

# ------------------------------------------------------------------ 4. data folder ACL
# Keys and config.py are written with mode 0600, which Windows does not enforce: the ACL does.
# SIDs, not names, so it works on Chinese Windows too: S-1-5-18 SYSTEM, S-1-5-32-544 Administrators.
$me = [System.Security.Principal.WindowsIdentity]::GetCurrent().User.Value
& icacls.exe $DataDir /inheritance:r /grant:r "*${me}:(OI)(CI)F" "*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F" | Out-Null
if ($LASTEXITCODE -ne 0) { Fail "无法设置数据目录权限：$DataDir" }

# ------------------------------------------------------------------ 5. autostart at logon
$user = [System.Security.Principal.WindowsIdentity]::GetCurrent().Name
$arguments = "node serve --data `"$DataDir`" --host 127.0.0.1 --port $Port"
# liandongw.exe is the GUI-subsystem launcher of the same CLI: no console window at logon.
$action = New-ScheduledTaskAction -Execute $LiandongW -Argument $arguments -WorkingDirectory $DataDir
$trigger = New-ScheduledTaskTrigger -AtLogOn -User $user
$settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries `
    -ExecutionTimeLimit ([TimeSpan]::Zero) -RestartCount 999 -RestartInterval (New-TimeSpan -Minutes 1) `
    -MultipleInstances IgnoreNew -StartWhenAvailable
$principal = New-ScheduledTaskPrincipal -UserId $user -LogonType Interactive -RunLevel Limited
Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $trigger -Settings $settings `
    -Principal $principal -Description "联动村便民服务室：登录时启动本机节点 http://127.0.0.1:$Port/" -Force | Out-Null
Start-ScheduledTask -TaskName $TaskName
Say "已设置开机登录后自动启动（任务计划程序：$TaskName）。"

# ------------------------------------------------------------------ 6. desktop shortcut
$Url = "http://127.0.0.1:$Port/"
$Shortcut = Join-Path ([Environment]::GetFolderPath("Desktop")) "联动村便民服务室.url"
Set-Content -Path $Shortcut -Encoding ASCII -Value @("[InternetShortcut]", "URL=$Url")

[ordered]@{
    liandong = $Info.liandong; python = $Python; install_dir = $InstallDir; venv = $Venv;
    data_dir = $DataDir; port = $Port; task = $TaskName; shortcut = $Shortcut; url = $Url
} | ConvertTo-Json | Set-Content -Encoding UTF8 -Path $StateFile

$up = $false
foreach ($i in 1..30) {
    try {
        $r = Invoke-WebRequest -UseBasicParsing -TimeoutSec 2 -Uri ($Url + "healthz")
        if ($r.StatusCode -eq 200) { $up = $true; break }
    } catch {
    }
    Start-Sleep -Seconds 2
}
if ($up) {
    Say "安装完成：双击桌面上的“联动村便民服务室”打开 $Url"
} else {
    Say "已安装，但节点尚未响应 $Url ：请稍候再试，或注销后重新登录。"
}
