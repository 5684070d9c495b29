"""Material files (申请材料) by what they contain: the formats accepted, how a download is named.

A file's type is read from its first bytes (its "magic number"), never from its name or the
type the browser claims: a ``setup.exe`` renamed ``身份证.jpg`` still starts with ``MZ``. A
material accepts JPEG, PNG and PDF unless its catalog entry lists its own ``formats`` (any of
:data:`FORMATS`). Executables and anything not accepted are refused with a Chinese message
(code ``material_type``) at every intake path: the wizard's upload and scanner folder (village
and township window), ``POST /api/v1/cases`` and the hub's project filing. No Flask here.

Downloads are served with the detected format's ``Content-Type`` and extension, under the
material's name (:func:`download_name`); bytes of no accepted format are not served at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from shared.core.errors import ValidationError


@dataclass(frozen=True)
class Format:
    """A file format recognised by its first bytes."""

    key: str
    mime: str
    extension: str
    label: str
    magic: tuple[bytes, ...]

    def matches(self, data: bytes) -> bool:
        return data.startswith(self.magic)


FORMATS: dict[str, Format] = {f.key: f for f in (
    Format("jpeg", "image/jpeg", ".jpg", "JPEG", (b"\xff\xd8\xff",)),
    Format("png", "image/png", ".png", "PNG", (b"\x89PNG\r\n\x1a\n",)),
    Format("pdf", "application/pdf", ".pdf", "PDF", (b"%PDF-",)),
    Format("tiff", "image/tiff", ".tif", "TIFF", (b"II*\x00", b"MM\x00*")),
    Format("gif", "image/gif", ".gif", "GIF", (b"GIF87a", b"GIF89a")),
)}
#: What a material accepts when its catalog entry names no ``formats``.
DEFAULT_FORMATS = ("jpeg", "png", "pdf")
#: First bytes of programs and scripts (Windows PE, ELF, Mach-O, shebang): named as such in the message.
EXECUTABLE_MAGIC = (b"MZ", b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe", b"#!")


def detect(data: bytes) -> Format | None:
    """The format of ``data`` by its first bytes, or None."""
    return next((f for f in FORMATS.values() if f.matches(data)), None)


def accepted_formats(material: dict) -> tuple[str, ...]:
    """The format keys a catalog material accepts."""
    return tuple(material.get("formats") or DEFAULT_FORMATS)


def _labels(keys) -> str:
    return "、".join(FORMATS[k].label for k in keys)


def check_file(data: bytes, filename: str, material: dict, field: str) -> Format:
    """The format of one uploaded file of ``material``, if the material accepts it.

    :raises ValidationError: ``material_type``: an executable, or content of no accepted format
        (whatever the file is called).
    """
    name = material.get("name") or material.get("code") or "材料"
    accepted = accepted_formats(material)
    if data.startswith(EXECUTABLE_MAGIC):
        raise ValidationError(field, f"「{filename}」是可执行程序，不能作为「{name}」上传；"
                                     f"请上传扫描件或照片（{_labels(accepted)}）", code="material_type")
    found = detect(data)
    if found is None or found.key not in accepted:
        what = f"{found.label} 文件" if found else "无法识别的格式"
        raise ValidationError(field, f"「{filename}」的内容是{what}，「{name}」只接受 {_labels(accepted)} 文件"
                                     "（按文件内容判断，与扩展名无关）", code="material_type")
    return found


def accept_attribute(material: dict) -> str:
    """The file picker's ``accept`` for a material: the types and extensions it accepts (a hint
    for the browser only; the server checks the content)."""
    extensions = {"jpeg": ".jpg,.jpeg", "tiff": ".tif,.tiff"}
    return ",".join(f"{FORMATS[k].mime},{extensions.get(k, FORMATS[k].extension)}" for k in accepted_formats(material))


def formats_text(material: dict) -> str:
    """The accepted formats in words, for the page (``JPEG、PNG、PDF``)."""
    return _labels(accepted_formats(material))


def check_files(files: list[tuple[str, str, bytes]], item: dict) -> None:
    """Check every ``(material code, filename, bytes)`` of an application against the item's catalog."""
    materials = {m["code"]: m for m in item["materials"]}
    for code, filename, data in files:
        check_file(data, filename, materials.get(code, {"code": code}), f"materials.{code}")


def download_name(material_name: str, fmt: Format) -> str:
    """The file name a download is offered under: the material's name and the detected extension."""
    cleaned = "".join(ch for ch in material_name if ch.isprintable() and ch not in '\\/:*?"<>|').strip()
    return (cleaned or "材料") + fmt.extension


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """A ``Content-Disposition`` value for a possibly Chinese ``filename`` (RFC 6266 with RFC 5987
    ``filename*``; old clients get an ASCII ``filename`` with the same extension)."""
    stem, dot, extension = filename.rpartition(".")
    ascii_stem = "".join(ch for ch in stem if ch.isascii() and (ch.isalnum() or ch in "-_")) or "material"
    fallback = f"{ascii_stem}{dot}{extension}" if dot else ascii_stem
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
