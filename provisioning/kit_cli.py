"""``liandong kit``: the offline install kit for Windows village PCs (see :mod:`provisioning.kit`)."""

from __future__ import annotations

from pathlib import Path

import click

from provisioning.kit import KitError, build_kit


@click.group()
def kit() -> None:
    """Offline install kits for Windows village PCs."""


@kit.command("build")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New or empty folder to write the kit into (e.g. on a USB stick).")
@click.option("--python-version", default="3.11", show_default=True,
              help="Python minor version installed on the village PCs (the wheels are built for it).")
@click.option("--wheel", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="liandong's wheel to ship (default: build one from this source checkout).")
@click.option("--python-installer", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Optional python.org Windows installer (64-bit, same minor version) to put in the kit; "
                   "install.ps1 runs it when the PC has no such Python.")
def kit_build(out_dir: Path, python_version: str, wheel: Path | None, python_installer: Path | None) -> None:
    """Build an offline install kit: a win_amd64 wheelhouse plus install/uninstall scripts."""
    try:
        build_kit(out_dir, python_version, wheel, python_installer, echo=click.echo)
    except KitError as exc:
        raise click.ClickException(f"{exc.message} [{exc.code}]") from exc
