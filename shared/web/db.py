"""The database owner of one node package: each request's connection, schema, ``init-db``."""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from pathlib import Path

import click
from flask import Flask, current_app, g

from shared.core import storage

log = logging.getLogger("liandong.db")


class DatabaseOwner:
    """Owns one package's SQLite file: its migrations and its connections."""

    def __init__(self, migrations: list[str]):
        self.migrations = migrations
        # Per serving thread: (the app, its connection), reused by the thread's next request of
        # that app. Opening one read and parsed the whole schema (~60 tables, their indexes and
        # triggers): a tenth of the hub's CPU per pushed envelope, milliseconds of every page.
        self._kept = threading.local()
        self._generation = 0  # a kept connection of an older generation is not used again

    def path(self, app: Flask) -> Path:
        """Where the app's database file is."""
        return Path(app.instance_path) / app.config["DATABASE"]

    @staticmethod
    def cache_kib(app: Flask) -> int | None:
        """Each connection's page cache: the SQLITE_CACHE_KIB setting, else the tier's."""
        return app.config.get("SQLITE_CACHE_KIB") or app.extensions["liandong_node"].kind.sqlite_cache_kib

    @staticmethod
    def temp_in_memory(app: Flask) -> bool:
        """Whether the tier keeps statement journals in memory (sync/tier.py)."""
        return app.extensions["liandong_node"].kind.sqlite_temp_in_memory

    def connect(self, app: Flask) -> sqlite3.Connection:
        """A new connection (jobs use this); the schema was brought up to date at start-up."""
        conn = storage.connect(self.path(app), cache_kib=self.cache_kib(app), temp_in_memory=self.temp_in_memory(app))
        try:
            storage.check_schema(conn, self.migrations)
        except storage.SchemaError:
            conn.close()
            raise
        return conn

    def upgrade(self, app: Flask) -> sqlite3.Connection:
        """Serving starts here: refuse a lost or damaged database; migrate an older schema after a
        backup; refuse a newer one."""
        key_file = Path(app.instance_path) / app.extensions["liandong_node"].kind.key_file
        storage.check_health(self.path(app), expect_data=key_file.exists(), cache_kib=self.cache_kib(app))
        conn = storage.connect(self.path(app), cache_kib=self.cache_kib(app), temp_in_memory=self.temp_in_memory(app))
        try:
            old, new, snapshot = storage.upgrade(conn, self.migrations, Path(app.instance_path) / "backups")
        except storage.SchemaError:
            conn.close()
            raise
        if snapshot is not None:
            log.warning("database migrated from schema %d to %d; backup of the old one: %s", old, new, snapshot)
        return conn

    def get_db(self) -> sqlite3.Connection:
        """The connection of the current request or app context: this thread's, kept from its
        previous request of the same app."""
        if "db" not in g:
            app = current_app._get_current_object()
            kept = getattr(self._kept, "slot", None)
            if kept is not None and kept[0]() is app and kept[2] == self._generation:
                g.db = kept[1]
            else:
                if kept is not None:
                    kept[1].close()
                g.db = storage.connect(self.path(app), cache_kib=self.cache_kib(app),
                                       temp_in_memory=self.temp_in_memory(app))
                self._kept.slot = (weakref.ref(app), g.db, self._generation)
        return g.db

    def renew_connections(self) -> None:
        """Every thread opens a new connection at its next request (the kept ones are closed
        then): for a caller that changes how connections are made (a test tracing statements)."""
        self._generation += 1

    def close_db(self, exc: BaseException | None = None) -> None:
        """End the context's use of its connection: nothing of an unfinished transaction stays
        (every write goes through ``write_transaction``, which ends its own), the connection is
        kept for the thread's next request."""
        conn = g.pop("db", None)
        if conn is None:
            return
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if current_app.extensions["liandong_node"].kind.release_db_cache:
            conn.execute("PRAGMA shrink_memory")
        kept = getattr(self._kept, "slot", None)
        if kept is None or kept[1] is not conn:
            conn.close()

    def init_app(self, app: Flask) -> None:
        """Migrate at start-up and register teardown and the ``init-db`` command."""
        storage.private_dir(app.instance_path)  # the data folder: 0700
        # One connection stays open for the app's life: closing the last connection to a WAL
        # database checkpoints and deletes the WAL, which per request would cost an fsync of the
        # main file on every call. Requests still get their own short-lived connections.
        app.extensions["liandong_db_keeper"] = self.upgrade(app)
        app.teardown_appcontext(self.close_db)
        app.extensions["liandong_db"] = self

        @app.cli.command("init-db")
        def init_db_command() -> None:
            """Create or migrate the node's database (after a backup)."""
            self.upgrade(current_app).close()
            click.echo(f"database ready: {self.path(current_app)}")


def get_db() -> sqlite3.Connection:
    """The current app's database connection, whichever package owns it."""
    return current_app.extensions["liandong_db"].get_db()
