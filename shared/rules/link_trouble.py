"""Why a sync round failed, in words an agent understands, and what to do about it.

The HTTP client records a failure as the exception or status it saw (``ReadTimeout:
HTTPConnectionPool(host=…)``, ``HTTP 401: {"error": …}``): right for the log, useless on a
village page. :func:`explain` turns it into one Chinese sentence with the next step, naming the
parent node; the raw text stays in the node's log for the technician.
"""

from __future__ import annotations

import re

#: (pattern on the raw failure, what happened, what to do). First match wins.
_CAUSES = (
    (re.compile(r"node_revoked"),
     "本机已被{parent}停用，不能再同步",
     "请打电话给{parent}了解情况"),
    (re.compile(r"Timeout|timed out", re.I),
     "{parent}长时间没有应答（超时），可能是网络很慢或对方电脑正忙",
     "系统会自动重试，办件在本机排队不会丢失；若超过半小时仍未连通，请打电话告知{parent}"),
    (re.compile(r"HTTP 40[13]\b|node_auth|revoked|吊销|停用", re.I),
     "{parent}不认本机的身份（本机可能已被停用，或需要重新注册）",
     "请打电话给{parent}的管理员核实本机的注册情况"),
    (re.compile(r"HTTP 5\d\d\b", re.I),
     "{parent}的系统出了故障，暂时无法接收",
     "系统会自动重试；若持续出现，请告知{parent}"),
    (re.compile(r"HTTP 4\d\d\b", re.I),
     "{parent}拒绝了本次同步的内容",
     "请打电话给{parent}的管理员，说明出现此提示的时间"),
    (re.compile(r"not JSON|JSON", re.I),
     "收到的应答不是联动系统发来的（本机可能连到了需要登录的无线网络页面）",
     "请检查本机的网络连接，必要时先在浏览器中完成上网登录"),
    (re.compile(r"Connection|refused|resolve|Name or service|No route|unreachable|Max retries", re.I),
     "连接不上{parent}：本机可能没有联网，或对方电脑没有开机",
     "请检查网线或无线网络；办件在本机排队，连通后自动发送，无需重复录入"),
    (re.compile(r"^internal$"),
     "本机的同步程序出错（已记入日志）",
     "请重新启动联动程序；若仍出错，请联系县里的技术支持"),
)


def explain(raw: str | None, parent: str) -> str:
    """One Chinese sentence for a failed round: what happened, then what to do ('' for none)."""
    if not raw:
        return ""
    if re.search(r"[\u4e00-\u9fff]", raw) and not re.search(r"[A-Za-z]{3,}", raw):
        return raw  # already said in Chinese (e.g. 未配置上级节点)
    for pattern, what, todo in _CAUSES:
        if pattern.search(raw):
            return f"{what.format(parent=parent)}。{todo.format(parent=parent)}。"
    return f"与{parent}同步未成功。系统会自动重试；若持续出现，请告知{parent}。"


def gave_up(parent: str, seconds: float) -> str:
    """The message when the agent's 立即同步 waited its short limit without an answer."""
    return (f"{parent}在 {seconds:g} 秒内没有应答，本次立即同步已放弃。办件在本机排队不会丢失，"
            f"系统会在后台继续自动重试。")
