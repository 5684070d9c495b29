"""The package as shipped: one version source, its metadata and what the wheel and sdist hold."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from shared.version import __version__

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("shared", "sync", "city_hub", "township_node", "village_node", "provisioning")


def test_the_version_is_written_once():
    literal = re.compile(rf"""["']{re.escape(__version__)}["']|version\s*=\s*{re.escape(__version__)}\b""")
    written = [str(p.relative_to(ROOT)) for package in SOURCES for p in (ROOT / package).rglob("*.py")
               if literal.search(p.read_text(encoding="utf-8"))]
    assert written == ["shared/version.py"]
    assert "version = attr: shared.version.__version__" in (ROOT / "setup.cfg").read_text(encoding="utf-8")


def test_the_cli_and_healthz_report_that_version(tmp_path):
    from provisioning.cli import main
    from village_node import create_app

    assert CliRunner().invoke(main, ["--version"]).output.strip() == f"liandong, version {__version__}"
    app = create_app({"DATA_DIR": str(tmp_path), "TIER": "village", "NODE_ID": "130926100201",
                      "HUB_ID": "130926", "SECRET_KEY": "t", "SCHEDULER_ENABLED": False})
    assert app.test_client().get("/healthz").get_json()["version"] == __version__
