"""Request body limits per route class, enforced before the body is read and before authentication.

Every request is bounded by the limit of its route's class (settings in :mod:`shared.core.settings`):

* ``MAX_PUSH_BYTES``: ``POST /sync/v1/push`` (a batch of envelopes);
* ``MAX_BLOB_CHUNK_BYTES``: ``PUT /sync/v1/blobs/<sha256>`` (one chunk of a material file);
* ``MAX_UPLOAD_BYTES``: the routes that carry material files (:data:`UPLOAD_ENDPOINTS`);
* ``MAX_BUNDLE_BYTES``: the U盘 bundle imports;
* ``MAX_FORM_BYTES``: everything else (page forms, JSON API, pull, blob status, enrolment);

and never by more than Flask's ``MAX_CONTENT_LENGTH``. A declared ``Content-Length`` over the
limit is answered 413 at once, so a flood costs the node neither memory nor the time to read it
(the hook runs before the account or node signature is looked at). A chunked body has no length
to check up front: its input is wrapped (:class:`BoundedInput`) so that reading stops with a 413
as soon as the body grows past the limit. A body with neither is read as empty.
"""

from __future__ import annotations

import io
import json
from typing import Any

from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider

from shared.core import canonical
from shared.core.errors import LiandongError, ValidationError

#: Endpoint -> the setting that bounds its request body (the default is ``MAX_FORM_BYTES``).
ROUTE_LIMITS: dict[str, str] = {
    "sync.push": "MAX_PUSH_BYTES",
    "sync.blob_chunk": "MAX_BLOB_CHUNK_BYTES",
    "sync.blob_batch": "MAX_PUSH_BYTES",
    "bundles.township_import": "MAX_BUNDLE_BYTES",
    "bundles.import_answer": "MAX_BUNDLE_BYTES",
}
#: Routes whose requests carry material files, photos or a catalog/calendar file.
UPLOAD_ENDPOINTS = ("intake.api_create_case", "intake.new_case", "projects.api_add_case", "projects.file_case",
                    "site_visits.api_record", "site_visits.case_page", "admin.catalog_page", "admin.calendar_page")
ROUTE_LIMITS.update(dict.fromkeys(UPLOAD_ENDPOINTS, "MAX_UPLOAD_BYTES"))
DEFAULT_LIMIT = "MAX_FORM_BYTES"


class TooLarge(LiandongError):
    """A request body over its route's limit (HTTP 413)."""

    default_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__("too_large", f"提交的内容过大：此类请求最多 {_size_text(limit)}")


def _size_text(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB" if n >= 1024 * 1024 else f"{n / 1024:g} KB"


def body_limit(endpoint: str | None) -> int:
    """The largest request body, in bytes, accepted for ``endpoint`` on this app."""
    config = current_app.config
    limit = int(config[ROUTE_LIMITS.get(endpoint or "", DEFAULT_LIMIT)])
    overall = config.get("MAX_CONTENT_LENGTH")
    return min(limit, int(overall)) if overall else limit


class BoundedInput(io.RawIOBase):
    """A request body without ``Content-Length`` (chunked), read until it passes ``limit``: then 413.

    Werkzeug's own ``max_content_length`` stream stops reading there without an error (the view
    would see a silently truncated body), so the limit is enforced here instead.
    """

    def __init__(self, stream, limit: int) -> None:
        super().__init__()
        self._stream = stream
        self._limit = limit
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self._limit + 1 - self._read)  # one byte more than allowed tells
        data = self._stream.read(want) if want > 0 else b""
        self._read += len(data)
        if self._read > self._limit:
            raise TooLarge(self._limit)
        buffer[:len(data)] = data
        return len(data)


def check_body_size():
    """``before_request``: refuse a declared body over the route's limit; bound a chunked one."""
    limit = body_limit(request.endpoint)
    declared = request.content_length  # None when absent; werkzeug ignores a malformed header
    if declared is not None and declared > limit:
        raise TooLarge(limit)
    if declared is None and request.environ.get("wsgi.input_terminated"):
        request.environ["wsgi.input"] = BoundedInput(request.environ["wsgi.input"], limit)
    return None


#: The Chinese message for each kind of :class:`shared.core.canonical.BoundsError`.
BOUNDS_MESSAGES = {
    "depth": f"请求体 JSON 嵌套过深（最多 {canonical.MAX_DEPTH} 层）",
    "integer": "请求体 JSON 中的整数超出范围（须在 64 位整数范围内）",
    "unicode": "请求体 JSON 中含有无效的 Unicode 字符（单独的代理项）",
}


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, with what :func:`shared.core.canonical.check_bounds` refuses answered 400.

    Answers carry Chinese as UTF-8 characters, not as escapes (signed payloads are base64, unaffected).

    ``request.get_json`` is the one way the API routes read their bodies. Hostile nesting
    (a RecursionError), integers SQLite cannot store and lone surrogates (which fail when stored)
    become a :class:`ValidationError` here: not a ``ValueError``, so ``get_json(silent=True)``
    does not swallow it and the client learns what was wrong, in the one JSON error shape.
    """

    ensure_ascii = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            obj = json.loads(s, **{"parse_int": canonical.bounded_int, **kwargs})
            canonical.check_bounds(obj, strings=("\\u" if isinstance(s, str) else b"\\u") in s)
        except RecursionError:
            raise ValidationError("body", BOUNDS_MESSAGES["depth"], code="malformed") from None
        except canonical.BoundsError as exc:
            raise ValidationError("body", BOUNDS_MESSAGES[exc.kind], code="malformed") from None
        return obj


def json_object() -> dict:
    """The request's JSON body, which must be an object with nothing :func:`canonical.check_bounds`
    refuses anywhere in it (a lone surrogate sent as raw bytes included), else the one 400 shape."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    try:
        canonical.check_bounds(body, strings=True)
    except canonical.BoundsError as exc:
        raise ValidationError("body", BOUNDS_MESSAGES[exc.kind], code="malformed") from None
    return body


def init_app(app: Flask) -> None:
    """Install the check (call before any other ``before_request`` hook: authentication) and
    the bounded JSON parser."""
    app.before_request(check_body_size)
    app.json = BoundedJSONProvider(app)
