"""One logging configuration per node process (``logging.config.dictConfig``).

A node logs into ``<data>/logs/liandong.log``: a rotating file of ``LOG_MAX_BYTES`` with
``LOG_BACKUPS`` older files beside it (``liandong.log.1`` …), so a village PC's disk never
fills with logs. ``LOG_CONSOLE`` adds the console (development, the demo). The loggers:

* ``liandong.*`` at ``LOG_LEVEL``: sync (failures at WARNING with their reason), apply, jobs, db;
* ``liandong.access``: one line per HTTP request (method, path without query string, status, ms);
* ``waitress`` and everything else at WARNING.
"""

from __future__ import annotations

import logging.config
from pathlib import Path

from shared.core.settings import DEFAULTS

LOG_FILE = Path("logs") / "liandong.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_config(data_dir: str | Path | None, config: dict, *, to_file: bool = True) -> dict:
    """The ``dictConfig`` dictionary for the node in ``data_dir`` with settings ``config``."""
    settings = {**DEFAULTS, **config}
    handlers: dict = {}
    if to_file and data_dir is not None:
        handlers["file"] = {
            "class": "logging.handlers.RotatingFileHandler", "formatter": "plain", "encoding": "utf-8",
            "filename": str(Path(data_dir) / LOG_FILE), "maxBytes": int(settings["LOG_MAX_BYTES"]),
            "backupCount": int(settings["LOG_BACKUPS"]), "delay": False}
    if settings["LOG_CONSOLE"] or not handlers:
        handlers["console"] = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": handlers,
        "loggers": {
            "liandong": {"level": str(settings["LOG_LEVEL"]).upper()},
            "waitress": {"level": "INFO"},  # its start line and task-queue warnings
        },
        "root": {"level": "WARNING", "handlers": list(handlers)},
    }


def configure_logging(data_dir: str | Path, config: dict) -> Path | None:
    """Configure this process's logging for the node in ``data_dir``; returns the log file (or None)."""
    settings = {**DEFAULTS, **config}
    dictionary = logging_config(data_dir, settings)
    if "file" in dictionary["handlers"]:
        (Path(data_dir) / LOG_FILE).parent.mkdir(parents=True, exist_ok=True)
    logging.config.dictConfig(dictionary)
    return Path(data_dir) / LOG_FILE if "file" in dictionary["handlers"] else None
