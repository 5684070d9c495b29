"""U盘 (USB) bundle pages: the sync exchange as files when there is no network at all.

Village (同步状态 page): 导出U盘包 downloads the signed bundle of everything not yet acknowledged
(:func:`sync.bundle.export_outbox`); 导入乡镇回执包 applies the township's answer bundle
(:func:`sync.bundle.import_answer`). Township (``/bundles``): 导入村级U盘包 takes a village's
bundle into custody exactly as a push would (:func:`sync.bundle.import_at_township` with the
app's :class:`township_node.relay_service.TownshipSync`) and offers the answer bundle for
download, to be carried back to the village. Every bundle is signed; a changed, foreign or
misaddressed file is refused with a Chinese message and nothing is imported.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from pathlib import Path

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for

from shared.core.canonical import CanonicalError
from shared.core.clock import CN_TZ
from shared.core.crypto import SignatureError
from shared.core.errors import LiandongError
from shared.web.auth import roles_required
from shared.web.context import current_node
from shared.web.db import get_db
from sync import bundle

bp = Blueprint("bundles", __name__, url_prefix="/bundles")

VILLAGE_ROLES = ("agent", "admin")
TOWNSHIP_ROLES = ("clerk", "admin")
SUFFIX = ".ldbundle"
_ANSWER_NAME = re.compile(r"^answer-\d{12}-\d{8}T\d{6}-[0-9a-f]{8}\.ldbundle$")

#: Why a bundle was refused, in words an agent or clerk can act on (matched on sync.bundle's reasons).
REFUSALS = (
    ("not addressed to this node", "这个U盘包不是发给本节点的（可能拿错了U盘包或导错了节点），未导入任何内容。"),
    ("not below this township", "这个U盘包来自不属于本乡镇的村，未导入任何内容。"),
    ("is missing next to", "这个U盘包分成了多卷，缺少其中一卷：请把所有分卷放在一起再导入，未导入任何内容。"),
    ("is not 2", "这个U盘包由更新版本的联动平台导出，请先升级本节点，未导入任何内容。"),
    ("", "U盘包无法通过签名核验（文件已损坏、被改动，或不是联动平台的U盘包），未导入任何内容。"),
)


def refusal_message(exc: Exception) -> str:
    """The Chinese message for a refused bundle."""
    text = str(exc)
    return next(message for marker, message in REFUSALS if marker in text)


def _workdir() -> Path:
    path = current_node().data_dir / "bundles"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _stamp() -> str:
    return current_node().now().astimezone(CN_TZ).strftime("%Y%m%dT%H%M%S")


def _uploaded(field: str) -> Path | None:
    """The uploaded file saved to a private temporary file (None when nothing was chosen)."""
    upload = request.files.get(field)
    if upload is None or not upload.filename:
        return None
    handle = tempfile.NamedTemporaryFile(dir=_workdir(), prefix="upload-", suffix=SUFFIX, delete=False)
    with handle:
        upload.save(handle)
    path = Path(handle.name)
    if path.stat().st_size == 0:
        path.unlink()
        return None
    return path


def _require_custody(keeps_custody: bool) -> None:
    """Export and answer import are a village's (sends through a township); bundle import and
    answers are the township's (keeps custody for the villages below it)."""
    if (current_node().relay is not None) != keeps_custody:
        abort(404)


# ---------------------------------------------------------------------------- village


@bp.post("/export")
@roles_required(*VILLAGE_ROLES)
def export():
    """Village: download the signed bundle of every envelope not yet acknowledged, with its files."""
    _require_custody(False)
    node = current_node()
    path = _workdir() / f"export-{node.node_id}-{_stamp()}{SUFFIX}"
    result = bundle.export_outbox(get_db(), node, path)
    current_app.logger.info("bundle exported: %s", result)
    response = send_file(path, mimetype="application/octet-stream", as_attachment=True, conditional=False,
                         download_name=f"liandong-{node.node_id}-{_stamp()}{SUFFIX}")
    response.call_on_close(lambda: path.unlink(missing_ok=True))  # streamed from disk, removed once sent
    response.headers["X-Liandong-Envelopes"] = str(result["envelopes"])
    return response


@bp.post("/answer")
@roles_required(*VILLAGE_ROLES)
def import_answer():
    """Village: apply the township's answer bundle (custody receipt, acks, decisions, metadata)."""
    _require_custody(False)
    path = _uploaded("bundle")
    if path is None:
        flash("请选择乡镇给出的回执包文件（.ldbundle）")
        return redirect(url_for("syncstatus.overview"))
    try:
        result = bundle.import_answer(get_db(), current_node(), path)
    except (SignatureError, CanonicalError) as exc:
        flash(refusal_message(exc))
    except LiandongError as exc:
        flash(f"回执包未能导入：{exc.message}")
    else:
        counts = result["counts"]
        flash(f"已导入乡镇回执包：已到乡镇 {counts.get('custody', 0)} 件，已到市中心 {counts.get('acked', 0)} 件，"
              f"仍未发送 {counts.get('pending', 0)} 件")
    finally:
        path.unlink(missing_ok=True)
    return redirect(url_for("syncstatus.overview"))


# ---------------------------------------------------------------------------- township


@bp.get("")
def township_page():
    """Township: the upload form, and the recent answer bundles (a village's are on 同步状态)."""
    if current_node().relay is None:  # a village's bundles are on its 同步状态 page
        return redirect(url_for("syncstatus.overview"))
    _require_custody(True)
    answers = sorted((p for p in _workdir().glob(f"answer-*{SUFFIX}") if _ANSWER_NAME.match(p.name)),
                     key=lambda p: p.name, reverse=True)[:20]
    return render_template("bundles/township.html", answers=[p.name for p in answers],
                           result=None, answer=request.args.get("answer"))


@bp.post("")
@roles_required(*TOWNSHIP_ROLES)
def township_import():
    """Township: take a village's bundle into custody; the answer bundle is offered for download."""
    _require_custody(True)
    path = _uploaded("bundle")
    if path is None:
        flash("请选择村便民服务室导出的U盘包文件（.ldbundle）")
        return redirect(url_for("bundles.township_page"))
    node = current_node()
    tag = uuid.uuid4().hex[:8]
    answer = _workdir() / f"pending-{tag}{SUFFIX}"
    try:
        result = bundle.import_at_township(get_db(), node, current_app.extensions["liandong_sync"], path, answer)
    except (SignatureError, CanonicalError) as exc:
        answer.unlink(missing_ok=True)
        flash(refusal_message(exc))
        return redirect(url_for("bundles.township_page"))
    except LiandongError as exc:
        answer.unlink(missing_ok=True)
        flash(f"U盘包未能导入：{exc.message}")
        return redirect(url_for("bundles.township_page"))
    finally:
        path.unlink(missing_ok=True)
    name = f"answer-{result['village']}-{_stamp()}-{tag}{SUFFIX}"
    answer.rename(_workdir() / name)
    flash(f"已导入村 {result['village']} 的U盘包：{result['envelopes']} 条记录，其中 {result['custody']} 条由本站保管待转市中心，"
          f"材料文件 {result['blobs']} 个。请下载回执包，带回村里在“同步状态”页导入。")
    return redirect(url_for("bundles.township_page", answer=name))


@bp.get("/answers/<name>")
@roles_required(*TOWNSHIP_ROLES)
def answer_file(name: str):
    """Township: download an answer bundle written by an import."""
    _require_custody(True)
    path = _workdir() / name
    if not _ANSWER_NAME.match(name) or not path.is_file():
        abort(404)
    return send_file(path, mimetype="application/octet-stream", as_attachment=True, download_name=name)
