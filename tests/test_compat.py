"""Village rooms run dual-core browsers (360, 搜狗, QQ) whose fast mode is an old Chromium.

* The CSS and JavaScript hold on Chromium 49: es-check (ES5) and doiuse (against
  ``chrome >= 49``) from tools/compat, run when node is present (``npm ci --prefix
  tools/compat`` installs them; .ci/run does).
* Every page asks for the webkit core and IE's newest mode, links a favicon the node serves,
  uses 16 px text, offers 大字 as a plain link, and prints without JavaScript.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from network_session import session_for

COMPAT = Path(__file__).resolve().parents[1] / "tools" / "compat"
STATIC = Path(__file__).resolve().parents[1] / "shared" / "web" / "static"


def _npm_tools():
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    if not (COMPAT / "node_modules" / ".bin" / "es-check").exists():
        pytest.skip("run `npm ci --prefix tools/compat` first (.ci/run does)")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=COMPAT, capture_output=True, text=True, timeout=120)


def test_css_and_javascript_hold_on_chromium_49():
    _npm_tools()
    result = _run("npm", "run", "-s", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CSS OK for chrome >= 49" in result.stdout


def test_the_checker_refuses_what_chromium_49_lacks(tmp_path):
    _npm_tools()
    css = tmp_path / "new.css"
    css.write_text(".a { display: flex; gap: 1em; } .b { display: grid; } .c { position: sticky; top: 0; }\n")
    result = _run("node", "check-css.js", str(css))
    assert result.returncode == 1 and "flexbox-gap" in result.stdout and "css-grid" in result.stdout
    assert "css-sticky" in result.stdout
    js = tmp_path / "new.js"
    js.write_text("const f = (x) => `${x}`;\n")
    assert _run("npx", "--no-install", "es-check", "es5", str(js)).returncode != 0


def test_the_stylesheet_has_16px_body_text_and_a_large_text_mode():
    css = (STATIC / "liandong.css").read_text(encoding="utf-8")
    assert re.search(r"body \{[^}]*font-size: 16px", css)
    assert re.search(r"body\.large-text \{ font-size: 20px; \}", css)


@pytest.fixture(scope="module")
def village(build_network):
    net = build_network(villages=1)
    handle = net.village()
    handle.account("agent", "agent", handle.node_id, display_name="王代办")
    return handle


def test_pages_ask_for_the_webkit_core_and_link_the_favicon(village):
    import requests

    page = requests.get(village.url + "/login", timeout=10).text
    assert '<meta name="renderer" content="webkit">' in page
    assert '<meta http-equiv="X-UA-Compatible" content="IE=edge">' in page
    assert re.search(r'<link rel="icon" href="/favicon.ico"', page)
    icon = requests.get(village.url + "/favicon.ico", timeout=10)  # public: the login page shows it too
    assert icon.status_code == 200 and icon.headers["Content-Type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO header


def test_large_text_is_a_link_remembered_in_a_cookie(village):
    s = session_for(village, "agent")
    page = s.get(village.url + "/catalog", timeout=10).text
    assert "large-text" not in re.search(r"<body[^>]*>", page).group(0)
    link = re.search(r'<a class="text-size" href="([^"]+)">大字</a>', page).group(1).replace("&amp;", "&")
    back = s.get(village.url + link, timeout=10)
    assert back.url.endswith("/catalog")  # back where the reader was
    assert "large-text" in re.search(r"<body[^>]*>", back.text).group(0) and ">标准字</a>" in back.text
    assert "large-text" in s.get(village.url + "/verify", timeout=10).text.split("<body", 1)[1][:100]
    link = re.search(r'<a class="text-size" href="([^"]+)">标准字</a>', back.text).group(1).replace("&amp;", "&")
    assert "large-text" not in s.get(village.url + link, timeout=10).text.split("<body", 1)[1][:100]


def test_text_size_never_redirects_to_another_site(village):
    import requests

    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        r = requests.get(village.url + "/text-size", params={"next": target}, allow_redirects=False, timeout=10)
        assert r.status_code == 302 and r.headers["Location"] in ("/", village.url + "/"), target


def test_odd_query_strings_do_not_break_the_page_links(village):
    s = session_for(village, "agent")
    for query in ("?_scheme=x", "?_external=1&q=yl", "?print=1&print=1"):
        r = s.get(village.url + "/catalog" + query, timeout=10)
        assert r.status_code == 200, query
        back = re.search(r'class="text-size" href="[^"]*next=([^"]*)"', r.text).group(1)
        assert back.startswith("/catalog"), (query, back)  # a local path, the reader comes back here
        assert "_scheme" not in r.text and "_external" not in r.text
