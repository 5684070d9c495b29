"""The offline install kit for Windows village PCs, built on any OS.

A kit is a folder to copy to a USB stick::

    wheelhouse/     liandong and every dependency as win_amd64 / pure-Python wheels for one
                    Python minor version (no compilers, no internet on the PC)
    install.cmd     runs install.ps1 past Windows' default script policy
    install.ps1     venv from the wheelhouse, enrolment (liandong node init), autostart at
                    logon (Task Scheduler), desktop shortcut to the village page
    uninstall.cmd, uninstall.ps1
    README.txt      the steps, in Chinese, for the person at the PC
    kit.json        what the kit holds: versions, platform, every wheel with its sha256

``pip download --platform`` evaluates environment markers against the machine that builds the
kit, except ``python_version`` (a pip limitation), so a Linux build would leave out what only
Windows needs (``colorama`` for click). :func:`unmet_requirements`
walks the wheelhouse's metadata with the markers of the target Windows and the build fetches
what is missing until the wheelhouse is closed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import HeaderParser
from importlib import resources
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from shared.core.errors import LiandongError
from shared.core.version import __version__

PLATFORM = "win_amd64"
PROJECT = "liandong"
#: Script templates shipped in ``provisioning/kit_scripts/`` (written with Windows line ends).
SCRIPTS = ("install.ps1", "uninstall.ps1", "install.cmd", "uninstall.cmd", "README.txt")
#: What the checkout holds that a wheel build does not need (and must not pick up).
SOURCE_LEFT_OUT = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".demo", ".pytest_cache",
                   ".ruff_cache", "tests", "benchmarks")
#: How many rounds of "fetch what Windows markers add" before giving up (two suffice today).
MAX_ROUNDS = 5


class KitError(LiandongError):
    """The kit could not be built (pip failed, a dependency has no Windows wheel, bad option)."""

    default_code = "kit_failed"


def check_python_version(version: str) -> tuple[int, int]:
    """``"3.11"`` → ``(3, 11)``; the project needs 3.11 or later."""
    match = re.fullmatch(r"3\.(\d{2})", version or "")
    if not match or int(match.group(1)) < 11:
        raise KitError("bad_python_version", f"Python 版本应写成 3.11、3.12 这样的形式，且不低于 3.11：{version!r}")
    return 3, int(match.group(1))


def windows_markers(python_version: str) -> dict[str, str]:
    """Environment-marker values of 64-bit CPython ``python_version`` on Windows 10."""
    major, minor = check_python_version(python_version)
    env = default_environment()
    env.update({
        "os_name": "nt", "sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64",
        "platform_release": "10", "platform_version": "10.0.19045",
        "implementation_name": "cpython", "platform_python_implementation": "CPython",
        "python_version": f"{major}.{minor}", "python_full_version": f"{major}.{minor}.9",
        "implementation_version": f"{major}.{minor}.9",
    })
    return env


def windows_tags(python_version: str) -> set[Tag]:
    """Wheel tags 64-bit CPython ``python_version`` on Windows installs, best first."""
    version = check_python_version(python_version)
    return set(cpython_tags(version, platforms=[PLATFORM])) | set(
        compatible_tags(version, f"cp{version[0]}{version[1]}", platforms=[PLATFORM]))


@dataclass(frozen=True)
class Wheel:
    """One wheel file of a wheelhouse."""

    path: Path
    name: str
    version: object
    tags: frozenset

    def requirements(self) -> list[Requirement]:
        """Its ``Requires-Dist`` lines."""
        with zipfile.ZipFile(self.path) as zf:
            [meta] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
            headers = HeaderParser().parsestr(zf.read(meta).decode("utf-8"))
        return [Requirement(line) for line in headers.get_all("Requires-Dist") or []]


def read_wheelhouse(wheelhouse: Path) -> list[Wheel]:
    """Every wheel in ``wheelhouse``."""
    wheels = []
    for path in sorted(Path(wheelhouse).glob("*.whl")):
        name, version, _build, tags = parse_wheel_filename(path.name)
        wheels.append(Wheel(path, name, version, frozenset(tags)))
    return wheels


def unmet_requirements(wheelhouse: Path, python_version: str, root: str = PROJECT) -> list[tuple[Requirement, str]]:
    """Requirements that no wheel in ``wheelhouse`` meets, for Windows: ``[(requirement, needed_by)]``.

    Walks from ``root`` through each chosen wheel's ``Requires-Dist`` (extras included), with the
    markers and wheel tags of 64-bit CPython ``python_version`` on Windows.
    """
    markers, tags = windows_markers(python_version), windows_tags(python_version)
    by_name: dict[str, list[Wheel]] = {}
    for wheel in read_wheelhouse(wheelhouse):
        if wheel.tags & tags:
            by_name.setdefault(wheel.name, []).append(wheel)
    unmet: list[tuple[Requirement, str]] = []
    todo: list[tuple[Requirement, str]] = [(Requirement(root), "(kit)")]
    chosen: dict[str, Wheel] = {}
    seen: set[tuple[str, str]] = set()
    while todo:
        requirement, needed_by = todo.pop()
        key = (str(requirement), needed_by)
        if key in seen:
            continue
        seen.add(key)
        name = canonicalize_name(requirement.name)
        candidates = [w for w in by_name.get(name, []) if requirement.specifier.contains(w.version, prereleases=True)]
        if not candidates:
            unmet.append((requirement, needed_by))
            continue
        wheel = chosen.setdefault(name, max(candidates, key=lambda w: w.version))
        for extra in {"", *requirement.extras}:
            for dependency in wheel.requirements():
                if dependency.marker is None or dependency.marker.evaluate({**markers, "extra": extra}):
                    todo.append((dependency, f"{wheel.name} {wheel.version}"))
    return unmet


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise KitError("pip_failed", f"{what}失败（pip 退出码 {done.returncode}）：\n{tail}")


def pip_download(requirements: list[str], wheelhouse: Path, python_version: str) -> None:
    """``pip download`` Windows wheels (never source) of ``requirements`` into ``wheelhouse``."""
    major, minor = check_python_version(python_version)
    _run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
          "--platform", PLATFORM, "--implementation", "cp", "--python-version", f"{major}{minor}",
          "--dest", str(wheelhouse), *requirements], "下载 Windows 依赖包")


def source_root() -> Path | None:
    """The source checkout this code runs from, if it is one (``setup.cfg`` beside the packages)."""
    root = Path(__file__).resolve().parent.parent
    setup = root / "setup.cfg"
    if setup.is_file() and re.search(r"^name\s*=\s*liandong\s*$", setup.read_text(encoding="utf-8"), re.M):
        return root
    return None


def project_wheel(wheelhouse: Path, wheel: Path | None) -> Path:
    """Put the project's own wheel into ``wheelhouse``: the one given, or one built from the checkout."""
    if wheel is not None:
        wheel = Path(wheel)
        if not wheel.is_file() or parse_wheel_filename(wheel.name)[0] != PROJECT:
            raise KitError("bad_wheel", f"不是联动的 wheel 文件：{wheel}")
        return Path(shutil.copy2(wheel, wheelhouse / wheel.name))
    root = source_root()
    if root is None:
        raise KitError("no_wheel", "此处不是源码目录：请用 --wheel 指定联动的 wheel 文件（python -m build 生成）")
    # Built from a clean copy: an in-tree build reuses build/lib, which keeps modules since removed.
    with tempfile.TemporaryDirectory(prefix="liandong-kit-") as tmp:
        source = Path(tmp) / "src"
        shutil.copytree(root, source, ignore=shutil.ignore_patterns(*SOURCE_LEFT_OUT))
        _run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps",
              "--wheel-dir", str(wheelhouse), str(source)], "构建联动 wheel ")
    [built] = [p for p in wheelhouse.glob(f"{PROJECT}-*.whl")]
    return built


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_scripts(out: Path) -> None:
    """The installer scripts, with CRLF line ends; .ps1 and README.txt with a UTF-8 BOM.

    Windows PowerShell 5.1 reads a BOM-less script as the ANSI code page and would garble the
    Chinese messages; Notepad on Windows 8.1 needs the BOM as well.
    """
    folder = resources.files("provisioning").joinpath("kit_scripts")
    for name in SCRIPTS:
        text = folder.joinpath(name).read_text(encoding="utf-8").replace("\r\n", "\n").replace("\n", "\r\n")
        encoding = "ascii" if name.endswith(".cmd") else "utf-8-sig"
        (out / name).write_text(text, encoding=encoding, newline="")


def build_kit(out: Path, python_version: str = "3.11", wheel: Path | None = None,
              python_installer: Path | None = None, echo: Callable[[str], None] = print) -> dict:
    """Build the kit into the empty (or new) folder ``out``; returns what ``kit.json`` says."""
    check_python_version(python_version)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise KitError("out_not_empty", f"输出目录不是空的：{out}（请换一个新目录）")
    if python_installer is not None and not Path(python_installer).is_file():
        raise KitError("no_python_installer", f"找不到 Python 安装程序：{python_installer}")
    if wheel is None and source_root() is None:
        raise KitError("no_wheel", "此处不是源码目录：请用 --wheel 指定联动的 wheel 文件（python -m build 生成）")
    created = not out.exists()
    try:
        return _fill_kit(out, python_version, wheel, python_installer, echo)
    except BaseException:
        # Half a kit must not pass for a kit: remove what this run wrote (a folder it made).
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def _fill_kit(out: Path, python_version: str, wheel: Path | None, python_installer: Path | None,
              echo: Callable[[str], None]) -> dict:
    wheelhouse = out / "wheelhouse"
    wheelhouse.mkdir(parents=True)
    own = project_wheel(wheelhouse, wheel)
    version = str(parse_wheel_filename(own.name)[1])
    echo(f"liandong {version}: downloading its dependencies for {PLATFORM}, Python {python_version}")
    pip_download([str(own)], wheelhouse, python_version)
    for _ in range(MAX_ROUNDS):
        unmet = unmet_requirements(wheelhouse, python_version)
        if not unmet:
            break
        wanted = sorted({f"{r.name}{'[' + ','.join(sorted(r.extras)) + ']' if r.extras else ''}{r.specifier}"
                         for r, _ in unmet})
        echo(f"adding what Windows needs beyond this machine's markers: {', '.join(wanted)}")
        pip_download(wanted, wheelhouse, python_version)
    else:
        unmet = unmet_requirements(wheelhouse, python_version)
    if unmet:
        listed = "; ".join(f"{r} (needed by {by})" for r, by in unmet)
        raise KitError("kit_unresolved", f"依赖包不完整，Windows 上无法离线安装：{listed}")

    write_scripts(out)
    installer_name = None
    if python_installer is not None:
        installer_name = Path(python_installer).name
        shutil.copy2(python_installer, out / installer_name)
    wheels = [{"file": w.path.name, "size": w.path.stat().st_size, "sha256": _sha256(w.path)}
              for w in read_wheelhouse(wheelhouse)]
    info = {
        "liandong": version, "python": python_version, "platform": PLATFORM,
        "built_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "built_by": f"liandong {__version__}",
        "python_installer": installer_name, "wheels": wheels,
    }
    (out / "kit.json").write_text(json.dumps(info, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    total = sum(w["size"] for w in wheels)
    echo(f"kit in {out}: {len(wheels)} wheels, {total / 1e6:.1f} MB")
    return info
