"""Domain exception types shared by every node.

These carry everything the web layer needs to answer with JSON (a stable
snake_case ``code``, a Chinese ``message`` for the user, an HTTP ``status``
and optionally the offending ``field``) without importing Flask here, so the
rules can be used and tested outside any request.
"""

from __future__ import annotations


class LiandongError(Exception):
    """Base class of all domain errors.

    :param code: stable snake_case identifier clients may branch on.
    :param message: user-facing message in Simplified Chinese.
    :param status: HTTP status the web layer should answer with.
    :param field: name of the offending input field, if any.
    """

    default_code = "error"
    default_message = "操作失败"
    default_status = 400

    def __init__(
        self,
        code: str | None = None,
        message: str | None = None,
        *,
        status: int | None = None,
        field: str | None = None,
    ) -> None:
        self.code = code or self.default_code
        self.message = message or self.default_message
        self.status = status if status is not None else self.default_status
        self.field = field
        super().__init__(self.message)

    def to_dict(self) -> dict:
        """Return the JSON error body: ``{"error": {"code", "message", "field"?}}``."""
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return {"error": body}

    def __repr__(self) -> str:
        extra = f", field={self.field!r}" if self.field is not None else ""
        return f"{type(self).__name__}({self.code!r}, {self.message!r}{extra})"


class ValidationError(LiandongError):
    """An input value is missing or malformed (HTTP 400)."""

    default_code = "invalid_field"
    default_message = "输入有误"
    default_status = 400

    def __init__(self, field: str, message: str, code: str = "invalid_field") -> None:
        super().__init__(code, message, field=field)


class RuleError(LiandongError):
    """A business rule forbids the operation in the current state (HTTP 409)."""

    default_code = "rule_violation"
    default_message = "当前情况下不能执行该操作"
    default_status = 409

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)


class NotFound(LiandongError):
    """The requested object does not exist (HTTP 404)."""

    default_code = "not_found"
    default_message = "未找到相关记录"
    default_status = 404

    def __init__(self, message: str | None = None) -> None:
        super().__init__("not_found", message)


class Forbidden(LiandongError):
    """The caller is known but lacks the role for this operation (HTTP 403)."""

    default_code = "forbidden"
    default_message = "无权执行此操作"
    default_status = 403

    def __init__(self, message: str | None = None, code: str = "forbidden") -> None:
        super().__init__(code, message)


class Unauthorized(LiandongError):
    """The caller is not authenticated (HTTP 401)."""

    default_code = "unauthorized"
    default_message = "请先登录"
    default_status = 401

    def __init__(self, message: str | None = None, code: str = "unauthorized") -> None:
        super().__init__(code, message)
