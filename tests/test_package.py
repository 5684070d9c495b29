"""The package as shipped: one version source, its metadata and what the wheel and sdist hold."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from shared.core.version import __version__

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("shared", "sync", "city_hub", "township_node", "village_node", "provisioning")


def test_the_version_is_written_once():
    literal = re.compile(rf"""["']{re.escape(__version__)}["']|version\s*=\s*{re.escape(__version__)}\b""")
    written = [str(p.relative_to(ROOT)) for package in SOURCES for p in (ROOT / package).rglob("*.py")
               if literal.search(p.read_text(encoding="utf-8"))]
    assert written == ["shared/core/version.py"]
    assert "version = attr: shared.core.version.__version__" in (ROOT / "setup.cfg").read_text(encoding="utf-8")


def test_the_cli_and_healthz_report_that_version(tmp_path):
    from provisioning.cli import main
    from village_node import create_app

    assert CliRunner().invoke(main, ["--version"]).output.strip() == f"liandong, version {__version__}"
    app = create_app({"DATA_DIR": str(tmp_path), "TIER": "village", "NODE_ID": "130926100201",
                      "HUB_ID": "130926", "SECRET_KEY": "a-test-secret-of-32-characters!!", "SCHEDULER_ENABLED": False})
    assert app.test_client().get("/healthz").get_json()["version"] == __version__


# ---------------------------------------------------------------- the built wheel and sdist

PACKAGE_DATA_SUFFIXES = (".html", ".json", ".css", ".js", ".ps1", ".cmd", ".txt", ".zdict")


def shipped_data_files() -> set[str]:
    """Non-Python files of the packages, as git tracks them (what the wheel must hold)."""
    tracked = subprocess.run(["git", "ls-files", *SOURCES], cwd=ROOT, capture_output=True, text=True, check=True)
    return {line for line in tracked.stdout.splitlines() if line.endswith(PACKAGE_DATA_SUFFIXES)}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """``python -m build`` of this checkout: its output, the wheel's and the sdist's file names."""
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # that one makes setuptools note it
    run = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as zf:
        wheel_names = set(zf.namelist())
        metadata = zf.read(f"liandong-{__version__}.dist-info/METADATA").decode("utf-8")
        entry_points = zf.read(f"liandong-{__version__}.dist-info/entry_points.txt").decode("utf-8")
    with tarfile.open(sdist) as tf:
        sdist_names = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    return {"log": run.stdout + run.stderr, "wheel": wheel, "wheel_names": wheel_names, "metadata": metadata,
            "entry_points": entry_points, "sdist_names": sdist_names}


@pytest.mark.pypi
def test_the_build_gives_no_warnings(built):
    warnings = [line for line in built["log"].splitlines() if re.search(r"warning|would be ignored", line, re.I)]
    assert not warnings, "\n".join(warnings)
    assert built["wheel"].name == f"liandong-{__version__}-py3-none-any.whl"


@pytest.mark.pypi
def test_the_wheel_ships_every_template_static_and_data_file_and_the_operator_files(built):
    names = built["wheel_names"]
    data = shipped_data_files()
    assert len(data) > 40 and "shared/web/templates/base.html" in data and "shared/data/catalog_seed.json" in data
    assert "provisioning/kit_scripts/install.ps1" in data and "provisioning/kit_scripts/install.cmd" in data
    assert sorted(data - names) == []
    assert f"liandong-{__version__}.dist-info/licenses/LICENSE" in names
    shared = f"liandong-{__version__}.data/data/share/liandong"
    operator_files = {f"deploy/{p.name}" for p in (ROOT / "deploy").iterdir()} | {"docs/openapi.yaml"}
    assert {f"{shared}/{name}" for name in operator_files} <= names
    assert operator_files | {"LICENSE", "README.md"} <= built["sdist_names"]
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "benchmarks/"))]


@pytest.mark.pypi
def test_the_wheel_metadata_license_and_dependencies(built):
    metadata = built["metadata"]
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
    assert f"Version: {__version__}" in metadata and "License-File: LICENSE" in metadata
    assert any(r.startswith("pypinyin") for r in requires)
    assert not any("sqlite-utils" in r or "sqlite_utils" in r for r in requires)
    [gunicorn] = [r for r in requires if r.startswith("gunicorn")]
    assert 'extra == "hub"' in gunicorn
    # liandongw: the CLI without a console window, for the Windows kit's logon task.
    assert "[gui_scripts]\nliandongw = provisioning.cli:main" in built["entry_points"]


def test_the_license_is_the_full_apache_2_text():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    assert len(text.splitlines()) > 190


def test_sqlite_utils_is_imported_nowhere():
    imports = re.compile(r"^\s*(import|from)\s+sqlite_utils\b", re.M)
    assert not [str(p) for package in SOURCES for p in (ROOT / package).rglob("*.py")
                if imports.search(p.read_text(encoding="utf-8"))]


def test_the_systemd_units_point_at_files_the_install_puts_there():
    # The units assume the wheel installed into /opt/liandong/.venv (docs/operations.md).
    venv = "/opt/liandong/.venv/"
    deploy_files = {p.name for p in (ROOT / "deploy").iterdir()}
    for unit in sorted((ROOT / "deploy").glob("*.service")):
        [exec_start] = re.findall(r"^ExecStart=(.+)$", unit.read_text(encoding="utf-8"), re.M)
        for path in re.findall(r"/opt/liandong/\S+", exec_start):
            assert path.startswith(venv), (unit.name, path)
            relative = path[len(venv):]
            assert relative in ("bin/liandong", "bin/gunicorn") or (
                relative.startswith("share/liandong/deploy/") and relative.rsplit("/", 1)[1] in deploy_files), (
                unit.name, path)
        assert " -c deploy/" not in exec_start, unit.name  # a relative path works only from a source checkout
