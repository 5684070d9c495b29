"""A signed-in browser-like session for HTML pages (login form with its CSRF token)."""

from __future__ import annotations

import re

import requests
from network import PASSWORD


def session_for(handle, username: str) -> requests.Session:
    """A requests session logged in to ``handle`` as ``username``."""
    s = requests.Session()
    page = s.get(handle.url + "/login", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = s.post(handle.url + "/login", data={"username": username, "password": PASSWORD, "csrf_token": token},
               timeout=10)
    assert r.ok and "/login" not in r.url, r.text[:300]
    return s
