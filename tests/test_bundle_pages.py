"""U盘 bundle pages (issue 5 item 2): the village downloads its signed bundle from 同步状态, the township
uploads it and hands back the answer bundle, the village imports the answer; refused files get a
Chinese message and import nothing. Only the files travel between village and township."""

from __future__ import annotations

import re

from network import catalog, create_case, pick_item
from network_session import session_for


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _outbox(village) -> list[str]:
    return [r[0] for r in village.query("SELECT state FROM outbox ORDER BY seq")]


def test_bundle_round_trip_through_the_pages(build_network):
    net = build_network(villages=2)
    village, township = net.village(0), net.township
    agent = village.account("agent", "agent")
    township.account("clerk", "clerk", township.node_id)
    item = pick_item(catalog(village, agent), "city")
    case_id = create_case(village, agent, item, [(item["materials"][0]["code"], "scan.png", b"\x89PNG\r\n\x1a\n scan-bytes")])["case_id"]
    township.stop()
    assert "error" in village.sync()
    assert _outbox(village) == ["pending"]

    v = session_for(village, "agent")
    status_page = v.get(f"{village.url}/sync-status").text
    assert "导出U盘包" in status_page and "导入回执包" in status_page
    exported = v.post(f"{village.url}/bundles/export", data={"csrf_token": _csrf(status_page)})
    assert exported.ok and "attachment" in exported.headers["Content-Disposition"]
    assert exported.headers["X-Liandong-Envelopes"] == "1"
    bundle = exported.content

    township.start()  # the clerk's PC; the village stays offline (its link is never used below)
    t = session_for(township, "clerk")
    page = t.get(f"{township.url}/bundles").text
    assert "导入村级U盘包" in page

    tampered = bytearray(bundle)
    tampered[len(tampered) // 2] ^= 1
    r = t.post(f"{township.url}/bundles", data={"csrf_token": _csrf(page)},
               files={"bundle": ("x.ldbundle", bytes(tampered))})
    assert "签名核验" in r.text and "未导入任何内容" in r.text
    assert township.scalar("SELECT COUNT(*) FROM custody") == 0

    r = t.post(f"{township.url}/bundles", data={"csrf_token": _csrf(page)},
               files={"bundle": ("village.ldbundle", bundle)})
    assert r.ok and "已导入村" in r.text, r.text[:500]
    assert township.scalar("SELECT COUNT(*) FROM custody WHERE origin = ?", (village.node_id,)) == 1
    assert township.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,)) == "SUBMITTED"
    link = re.search(r'id="answer-download" href="([^"]+)"', r.text).group(1)
    answer = t.get(township.url + link)
    assert answer.ok and "attachment" in answer.headers["Content-Disposition"]

    # The same bundle again creates nothing twice.
    t.post(f"{township.url}/bundles", data={"csrf_token": _csrf(page)}, files={"bundle": ("again.ldbundle", bundle)})
    assert township.scalar("SELECT COUNT(*) FROM custody") == 1

    # The village's own export is not an answer addressed to it.
    r = v.post(f"{village.url}/bundles/answer", data={"csrf_token": _csrf(status_page)},
               files={"bundle": ("own.ldbundle", bundle)})
    assert "不是发给本节点的" in r.text
    assert _outbox(village) == ["pending"]

    r = v.post(f"{village.url}/bundles/answer", data={"csrf_token": _csrf(status_page)},
               files={"bundle": ("answer.ldbundle", answer.content)})
    assert "已导入乡镇回执包" in r.text and "已到乡镇 1 件" in r.text
    assert _outbox(village) == ["custody"]

    # The other village cannot use this township answer, and the township refuses a bundle it cannot verify.
    other = net.village(1)
    other.account("agent2", "agent")
    o = session_for(other, "agent2")
    r = o.post(f"{other.url}/bundles/answer", data={"csrf_token": _csrf(o.get(f"{other.url}/sync-status").text)},
               files={"bundle": ("answer.ldbundle", answer.content)})
    assert "不是发给本节点的" in r.text

    # The township forwards the case to the hub by network as usual.
    township.sync()
    assert net.hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (case_id,)) == 1


def test_bundle_pages_are_per_tier_and_need_a_file(build_network):
    net = build_network()
    village, township = net.village(), net.township
    village.account("agent", "agent")
    township.account("clerk", "clerk", township.node_id)
    v = session_for(village, "agent")
    assert v.get(f"{village.url}/bundles").url.endswith("/sync-status")  # the village's bundle forms are there
    r = v.post(f"{village.url}/bundles/answer", data={"csrf_token": _csrf(v.get(f"{village.url}/sync-status").text)})
    assert "请选择乡镇给出的回执包文件" in r.text
    t = session_for(township, "clerk")
    assert t.get(f"{township.url}/bundles/answers/..%2Fconfig.py").status_code == 404
    assert "U盘导入导出" in t.get(f"{township.url}/relay").text
