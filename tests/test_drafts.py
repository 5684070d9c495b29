"""暂存 at the village (issue 5 item 1): a draft lists under 我的办件 with 继续, is never sent and never
counted, and becomes a case only when submitted."""

from __future__ import annotations

import re

from network import catalog, form_for, pick_item, valid_id_number
from network_session import session_for


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_a_draft_is_kept_here_never_sent_and_submitted_later(build_network):
    net = build_network()
    village, hub = net.village(), net.hub
    agent = village.account("agent", "agent")
    item = next(i for i in catalog(village, agent) if not i["situations"] and i["decide_level"] == "city"
                and "village" in i["accept_levels"] and not i.get("consultation_only"))
    s = session_for(village, "agent")
    page = s.get(f"{village.url}/cases/new/{item['code']}").text
    assert 'value="draft"' in page and "暂存" in page
    r = s.post(f"{village.url}/cases/new/{item['code']}", data={
        "csrf_token": _csrf(page), "step": "form", "go": "draft",
        "applicant_name": "暂存张", "applicant_id_number": "1309", "applicant_phone": "",  # half-typed is fine
    })
    assert r.ok and r.url.endswith("/cases") and "已暂存" in r.text and "继续" in r.text and "暂存张" in r.text
    assert village.scalar("SELECT COUNT(*) FROM drafts") == 1
    assert village.scalar("SELECT COUNT(*) FROM cases") == 0
    assert village.scalar("SELECT COUNT(*) FROM outbox") == 0
    assert "共 0 件" in r.text  # the list counts cases, not drafts

    net.sync_all(rounds=1)
    assert hub.scalar("SELECT COUNT(*) FROM cases") == 0  # nothing of the draft left the PC

    draft_id = village.scalar("SELECT draft_id FROM drafts")
    link = re.search(r'href="(/cases/new/[^"]+draft=[0-9a-f]+)"', r.text).group(1)
    resumed = s.get(village.url + link.replace("&amp;", "&")).text
    assert 'value="暂存张"' in resumed and f'name="draft_id" value="{draft_id}"' in resumed

    # Saving again updates the same draft; submitting it turns it into a case and deletes it.
    s.post(f"{village.url}/cases/new/{item['code']}", data={
        "csrf_token": _csrf(resumed), "step": "form", "go": "draft", "draft_id": draft_id,
        "applicant_name": "暂存张", "applicant_id_number": valid_id_number(), "applicant_phone": "13812345678"})
    assert village.scalar("SELECT COUNT(*) FROM drafts") == 1
    form = {f"form_{k}": str(v) for k, v in form_for(item).items()}
    r = s.post(f"{village.url}/cases/new/{item['code']}", data={
        "csrf_token": _csrf(resumed), "draft_id": draft_id, "entrust_consent": "yes",
        "applicant_name": "暂存张", "applicant_id_number": valid_id_number(), "applicant_phone": "13812345678",
        **form})
    assert r.ok and "/receipt" in r.url, r.text[:500]
    assert village.scalar("SELECT COUNT(*) FROM drafts") == 0
    assert village.scalar("SELECT COUNT(*) FROM cases") == 1
    net.sync_all(rounds=1)
    assert hub.scalar("SELECT applicant_name FROM cases") == "暂存张"


def test_a_draft_can_be_deleted(build_network):
    net = build_network()
    village = net.village()
    agent = village.account("agent", "agent")
    item = pick_item(catalog(village, agent), "city")
    s = session_for(village, "agent")
    page = s.get(f"{village.url}/cases/new/{item['code']}").text
    step = re.search(r'name="step" value="([^"]+)"', page).group(1)
    r = s.post(f"{village.url}/cases/new/{item['code']}", data={"csrf_token": _csrf(page), "step": step,
                                                               "go": "draft"})
    draft_id = village.scalar("SELECT draft_id FROM drafts")
    r = s.post(f"{village.url}/drafts/{draft_id}/delete", data={"csrf_token": _csrf(r.text)})
    assert "已删除暂存的办件" in r.text
    assert village.scalar("SELECT COUNT(*) FROM drafts") == 0
