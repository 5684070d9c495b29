"""The offline install kit for Windows village PCs (``liandong kit build``).

The closure check runs offline on wheels made here; building the real kit downloads win_amd64
wheels from the package index (marker ``pypi``) and then proves, twice, that the wheelhouse
installs with no index at all: with its own walk of every wheel's metadata under Windows'
markers, and with pip's resolver (``pip install --dry-run --no-index --platform win_amd64``).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioning.cli import main
from provisioning.kit import KitError, build_kit, unmet_requirements
from shared.core.version import __version__


def make_wheel(folder: Path, filename: str, requires: list[str] = ()) -> Path:
    """A minimal wheel: just its METADATA (enough for the closure walk)."""
    name, version = filename.split("-")[:2]
    path = folder / filename
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             *(f"Requires-Dist: {r}" for r in requires)]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(lines) + "\n")
    return path


def names(unmet) -> list[str]:
    return sorted(f"{r.name} <- {by.split()[0]}" for r, by in unmet)


def test_the_closure_uses_windows_markers_and_windows_wheels(tmp_path):
    make_wheel(tmp_path, "liandong-0.1.0-py3-none-any.whl", ["tzlocal", "cffi>=1", "uvloop; sys_platform != 'win32'",
                                                            "gunicorn; extra == 'hub'"])
    make_wheel(tmp_path, "tzlocal-5.0-py3-none-any.whl", ['tzdata; platform_system == "Windows"',
                                                          'pytest; extra == "testing"'])
    make_wheel(tmp_path, "cffi-2.0-cp311-cp311-manylinux_2_17_x86_64.whl")  # a Linux wheel does not count
    # tzdata (Windows only) and a Windows cffi are missing; uvloop (not on Windows) and extras are not needed.
    assert names(unmet_requirements(tmp_path, "3.11")) == ["cffi <- liandong", "tzdata <- tzlocal"]
    make_wheel(tmp_path, "tzdata-2025.1-py2.py3-none-any.whl")
    make_wheel(tmp_path, "cffi-2.0-cp312-cp312-win_amd64.whl")  # for another Python
    assert names(unmet_requirements(tmp_path, "3.11")) == ["cffi <- liandong"]
    make_wheel(tmp_path, "cffi-2.0-cp311-cp311-win_amd64.whl")
    assert unmet_requirements(tmp_path, "3.11") == []
    assert names(unmet_requirements(tmp_path, "3.12")) == []  # cp312 is there too


@pytest.mark.parametrize("version", ["3.10", "2.7", "3", "py311", ""])
def test_python_versions_below_3_11_or_malformed_are_refused(tmp_path, version):
    with pytest.raises(KitError) as exc:
        build_kit(tmp_path / "kit", python_version=version)
    assert exc.value.code == "bad_python_version"
    assert not (tmp_path / "kit").exists()


def test_the_command_refuses_a_folder_in_use_without_a_traceback(tmp_path):
    (tmp_path / "something.txt").write_text("x")
    result = CliRunner().invoke(main, ["kit", "build", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "输出目录不是空的" in result.output and "[out_not_empty]" in result.output


def test_a_failed_build_leaves_no_half_kit(tmp_path):
    bogus = tmp_path / "liandong-0.1.0-py3-none-any.whl"
    bogus.write_bytes(b"not a zip")
    out = tmp_path / "kit"
    result = CliRunner().invoke(main, ["kit", "build", "--out", str(out), "--wheel", str(bogus)])
    assert result.exit_code == 1 and "[pip_failed]" in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kit") / "usb"
    result = CliRunner().invoke(main, ["kit", "build", "--out", str(out), "--python-version", "3.11"])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.pypi
def test_the_kit_holds_a_complete_wheelhouse_for_windows(kit, tmp_path):
    info = json.loads((kit / "kit.json").read_text(encoding="utf-8"))
    assert (info["liandong"], info["python"], info["platform"]) == (__version__, "3.11", "win_amd64")
    wheels = {w["file"]: w for w in info["wheels"]}
    assert set(wheels) == {p.name for p in (kit / "wheelhouse").glob("*.whl")}
    for name, entry in wheels.items():
        assert hashlib.sha256((kit / "wheelhouse" / name).read_bytes()).hexdigest() == entry["sha256"]
    files = " ".join(wheels)
    # Compiled dependencies as Windows wheels (Windows-only markers: test_the_closure_uses_windows_markers…).
    assert "win_amd64" in files and "pynacl-" in files.lower() and "markupsafe-" in files
    assert "gunicorn" not in files and "sqlite_utils" not in files  # the hub extra is not in a village kit
    assert unmet_requirements(kit / "wheelhouse", "3.11") == []

    # pip's own resolver agrees: everything installs from the wheelhouse alone.
    dry_run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
         "--find-links", str(kit / "wheelhouse"), "--only-binary=:all:", "--platform", "win_amd64",
         "--implementation", "cp", "--python-version", "311", "--target", str(tmp_path / "target"),
         f"liandong=={__version__}"], capture_output=True, text=True, timeout=300)
    assert dry_run.returncode == 0, dry_run.stdout[-2000:] + dry_run.stderr[-2000:]
    assert f"liandong-{__version__}" in dry_run.stdout


@pytest.mark.pypi
def test_the_wheelhouse_check_fails_when_a_dependency_is_missing(kit, tmp_path):
    partial = tmp_path / "wheelhouse"
    partial.mkdir()
    for wheel in (kit / "wheelhouse").glob("*.whl"):
        if not wheel.name.startswith("itsdangerous-"):
            (partial / wheel.name).write_bytes(wheel.read_bytes())
    assert names(unmet_requirements(partial, "3.11")) == ["itsdangerous <- flask", "itsdangerous <- flask-wtf"]


@pytest.mark.pypi
def test_the_kit_scripts_are_ready_for_windows_powershell(kit):
    for name in ("install.ps1", "uninstall.ps1", "README.txt"):
        raw = (kit / name).read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf"), f"{name}: PowerShell 5.1 and old Notepad need the UTF-8 BOM"
        assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b""), f"{name}: CRLF line ends"
    for name in ("install.cmd", "uninstall.cmd"):
        raw = (kit / name).read_bytes()
        assert raw.isascii() and b"-ExecutionPolicy Bypass" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    install = (kit / "install.ps1").read_text(encoding="utf-8-sig")
    for needed in ("--no-index --find-links", "node init --data", "Register-ScheduledTask", "-AtLogOn",
                   "liandongw.exe", "node serve --data", "--host 127.0.0.1", "[InternetShortcut]",
                   'GetFolderPath("Desktop")', "icacls.exe", "-RestartCount"):
        assert needed in install, needed
    uninstall = (kit / "uninstall.ps1").read_text(encoding="utf-8-sig")
    for needed in ("Unregister-ScheduledTask", "node status --data", "-RemoveData", "$State.shortcut"):
        assert needed in uninstall, needed
    # Braces and parentheses balance (a cheap syntax check where no PowerShell runs).
    for text in (install, uninstall):
        assert text.count("{") == text.count("}") and text.count("(") == text.count(")")
