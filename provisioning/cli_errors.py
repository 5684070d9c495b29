"""The one place where the ``liandong`` command line turns exceptions into messages.

An operator reads one line in one style, Chinese first and the stable English code after it:
``错误：注册令牌格式错误（bad_token）``, with exit status 1 and no traceback. Only programming
errors (exceptions not listed here) still show a traceback, because those are bugs to report.
"""

from __future__ import annotations

import sqlite3
import sys

import click
import requests

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
    if isinstance(exc, requests.RequestException):
        return CliError(f"无法连接对方节点：{exc}", "network_error")
    if isinstance(exc, OSError):
        return CliError(f"无法读写文件 {exc.filename or ''}：{exc.strerror or exc}", "os_error")
    return None


class LiandongGroup(click.Group):
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
