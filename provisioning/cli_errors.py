"""The one place where the ``liandong`` command line turns exceptions into messages.

An operator reads one line in one style, Chinese first and the stable English code after it:
``错误：注册令牌格式错误（bad_token）``, with exit status 1 and no traceback. Only programming
errors (exceptions not listed here) still show a traceback, because those are bugs to report.
"""

from __future__ import annotations

import importlib
import sqlite3
import sys

import click

from shared.core.errors import LiandongError


class CliError(click.ClickException):
    """A user error as the operator sees it: ``错误：<中文说明>（<code>）``."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code

    def format_message(self) -> str:
        return f"错误：{self.message}（{self.code}）"

    def show(self, file=None) -> None:
        click.echo(self.format_message(), file=file or sys.stderr)


def as_cli_error(exc: BaseException) -> CliError | None:
    """The operator's message for ``exc``, or None for an exception that is a bug."""
    if isinstance(exc, LiandongError):
        return CliError(exc.message, exc.code)
    if isinstance(exc, sqlite3.DatabaseError):
        return CliError(f"数据库无法读写或已损坏：{exc}", "database_error")
    # requests is looked up, not imported: the village's serve never loads it, and an exception of
    # it can only exist where some command did (sim, demo).
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.RequestException) or isinstance(
            exc, (ConnectionError, TimeoutError)):  # sync.transport's failures are these
        return CliError(f"无法连接对方节点：{exc}", "network_error")
    if isinstance(exc, OSError):
        return CliError(f"无法读写文件 {exc.filename or ''}：{exc.strerror or exc}", "os_error")
    return None


class DeferredGroup(click.Group):
    """A group whose subcommands may be registered as loaders, imported only when that command
    runs (or ``--help`` lists it): a village's ``node serve`` then loads no hub, simulator or
    kit code (docs/performance.md, "The village process")."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.deferred: dict[str, str] = {}

    def defer(self, name: str, where: str) -> None:
        """Register the command ``where`` names (``"package.module:attribute"``) under ``name``,
        imported when it is first asked for."""
        self.deferred[name] = where

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.deferred})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.deferred and cmd_name not in self.commands:
            module, attribute = self.deferred[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


class LiandongGroup(DeferredGroup):
    """The top-level group: every subcommand runs inside the one exception mapping."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException:
            raise
        except (click.exceptions.Abort, click.exceptions.Exit):
            raise
        except Exception as exc:
            mapped = as_cli_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
