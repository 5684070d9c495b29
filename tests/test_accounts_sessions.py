"""Accounts and sessions (issue 10 point 3): the password check, throttling, the audit of failures,
equal time for unknown users, sessions ended on the server, a fresh session at login, ``next=``
and the security headers. Every test drives the real hub app (its Flask test client, a real
SQLite file) and fails when its guard is taken out.
"""

from __future__ import annotations

import re
import statistics
import time

import pytest
from click.testing import CliRunner
from network import PASSWORD

from provisioning import nodes
from provisioning.cli import main as cli
from shared.core.clock import Clock
from shared.core.settings import DEFAULTS
from shared.services import accounts
from shared.web.auth import safe_next

_addresses = iter(f"10.0.{i // 250}.{i % 250 + 1}" for i in range(10_000))


@pytest.fixture(scope="module")
def hub(build_network):
    return build_network(township=False).hub


def client_of(handle, address: str | None = None):
    """A browser at its own client address (the per-address throttle counts each separately)."""
    return at_address(handle.app.test_client(), address or next(_addresses))


def at_address(client, address: str):
    client.environ_base["REMOTE_ADDR"] = address
    return client


def csrf(client) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)


def login(client, username: str, password: str = PASSWORD, next_: str | None = None):
    path = "/login" + (f"?next={next_}" if next_ is not None else "")
    return client.post(path, data={"username": username, "password": password, "csrf_token": csrf(client)})


def logged_in(client) -> bool:
    response = client.get("/queue")
    assert response.status_code in (200, 302)
    return response.status_code == 200


def audit_rows(hub, action: str, target: str) -> list:
    return hub.query("SELECT actor, action, target, detail FROM audit_log WHERE action = ? AND target = ?",
                     (action, target))


# ------------------------------------------------------------------ the password check


def test_a_wrong_password_is_refused_and_the_right_one_accepted(hub):
    hub.account("pw_window", "window", "130926-rs")
    client = client_of(hub)
    refused = login(client, "pw_window", "wrong-password-1")
    assert refused.status_code == 200 and "用户名或密码错误" in refused.get_data(as_text=True)
    assert not logged_in(client)
    assert login(client, "pw_window", "").status_code == 200 and not logged_in(client)
    assert login(client, "pw_window").status_code == 302
    assert logged_in(client)


def accounts_table():
    """An in-memory database with the node schema's ``accounts`` table (for the password functions alone)."""
    import sqlite3

    from shared.services.schema import COMMON, SESSIONS

    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    conn.execute(re.search(r"CREATE TABLE accounts \(.*?\);", COMMON, re.S).group(0))
    conn.execute(SESSIONS.split(";")[0])  # session_epoch
    return conn


def test_passwords_are_stored_with_scrypt():
    conn = accounts_table()
    accounts.create_account(conn, "hash_user", "long-enough-1", "agent", "x", None, Clock().now())
    stored = conn.execute("SELECT password_hash FROM accounts").fetchone()[0]
    assert stored.startswith("scrypt:32768:8:1$")
    assert accounts.authenticate(conn, "hash_user", "long-enough-1") is not None
    assert accounts.authenticate(conn, "hash_user", "long-enough-2") is None


# ------------------------------------------------------------------ audit and throttling


def test_a_failed_login_is_audited_with_name_and_address_never_the_password(hub):
    client = client_of(hub, "10.9.9.9")
    login(client, "audit_nobody", "secret-typed-by-mistake")
    rows = audit_rows(hub, "login.failed", "audit_nobody")
    assert len(rows) == 1
    assert rows[0]["actor"] == "anonymous" and "10.9.9.9" in rows[0]["detail"]
    everything = " ".join(str(v) for row in hub.query("SELECT * FROM audit_log") for v in tuple(row))
    assert "secret-typed-by-mistake" not in everything


def test_five_failures_lock_the_account_even_against_the_right_password_until_an_admin_unlocks(hub):
    hub.account("lock_window", "window", "130926-rs")
    for _ in range(DEFAULTS["LOGIN_MAX_FAILURES"]):
        login(client_of(hub), "lock_window", "wrong-password-1")  # from different addresses: the account counts
    assert audit_rows(hub, "login.locked", "lock_window")

    client = client_of(hub)
    refused = login(client, "lock_window")  # the right password
    assert refused.status_code == 200
    assert "已暂时锁定" in refused.get_data(as_text=True)
    assert not logged_in(client)
    assert audit_rows(hub, "login.refused", "lock_window")

    # The admin lifts the lock on the accounts page.
    hub.account("lock_admin", "admin")
    admin = client_of(hub)
    assert login(admin, "lock_admin").status_code == 302
    page = admin.get("/admin/accounts").get_data(as_text=True)
    assert "登录已锁定至" in page and 'name="username" value="lock_window"' in page
    assert admin.post("/admin/login-locks/unlock", data={"username": "lock_window",
                                                         "csrf_token": csrf(admin)}).status_code == 302
    assert audit_rows(hub, "login.unlocked", "account:lock_window")[0]["actor"] == "lock_admin"
    assert login(client, "lock_window").status_code == 302 and logged_in(client)


def test_the_cli_lifts_a_lock(hub):
    hub.account("cli_lock", "window", "130926-rs")
    for _ in range(DEFAULTS["LOGIN_MAX_FAILURES"]):
        login(client_of(hub), "cli_lock", "wrong-password-1")
    assert "已暂时锁定" in login(client_of(hub), "cli_lock").get_data(as_text=True)
    result = CliRunner().invoke(cli, ["account", "unlock", "--data", str(hub.data_dir), "--username", "cli_lock"])
    assert result.exit_code == 0, result.output
    assert "1 lock(s) lifted" in result.output
    assert login(client_of(hub), "cli_lock").status_code == 302


def test_many_failures_from_one_address_lock_that_address_for_every_account(hub):
    hub.account("addr_window", "window", "130926-rs")
    address = "10.200.0.1"
    for i in range(DEFAULTS["LOGIN_MAX_FAILURES_PER_ADDRESS"]):
        login(client_of(hub, address), f"guess{i}", "wrong-password-1")  # a different name each time
    refused = login(client_of(hub, address), "addr_window")
    assert "已暂时锁定" in refused.get_data(as_text=True)
    assert login(client_of(hub), "addr_window").status_code == 302  # another address is not affected
    hub.account("addr_admin", "admin")
    admin = client_of(hub)
    assert login(admin, "addr_admin").status_code == 302
    page = admin.get("/admin/accounts").get_data(as_text=True)
    assert "已锁定的登录地址" in page and f'name="address" value="{address}"' in page
    result = CliRunner().invoke(cli, ["account", "unlock", "--data", str(hub.data_dir), "--address", address])
    assert result.exit_code == 0, result.output
    assert login(client_of(hub, address), "addr_window").status_code == 302


def test_an_unknown_user_takes_as_long_as_a_wrong_password():
    conn = accounts_table()
    accounts.create_account(conn, "known_user", "long-enough-1", "agent", "x", None, Clock().now())
    accounts.authenticate(conn, "nobody", "warm-up")  # the dummy hash is made once

    def median_seconds(username: str) -> float:
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            assert accounts.authenticate(conn, username, "wrong-password-1") is None
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    known, unknown = median_seconds("known_user"), median_seconds("nobody")
    assert known > 0.005  # a real hash check costs milliseconds
    assert 0.5 < unknown / known < 2.0, (known, unknown)


# ------------------------------------------------------------------ sessions


def _cookie(client) -> str:
    return client.get_cookie(client.application.config["SESSION_COOKIE_NAME"]).value


def _replay(hub, cookie: str):
    other = client_of(hub)
    other.set_cookie(other.application.config["SESSION_COOKIE_NAME"], cookie)
    return other


def test_a_cookie_captured_before_logout_no_longer_works(hub):
    hub.account("logout_window", "window", "130926-rs")
    client = client_of(hub)
    assert login(client, "logout_window").status_code == 302
    captured = _cookie(client)
    assert logged_in(_replay(hub, captured))
    assert client.post("/logout", data={"csrf_token": csrf(client)}).status_code == 302
    assert not logged_in(_replay(hub, captured))
    assert not logged_in(client)


def test_a_cookie_captured_before_a_password_reset_no_longer_works(hub):
    hub.account("reset_window", "window", "130926-rs")
    client = client_of(hub)
    assert login(client, "reset_window").status_code == 302
    captured = _cookie(client)
    nodes.add_account(hub.data_dir, "reset_window", "a-new-password-2", "window", "x", "130926-rs")
    assert not logged_in(_replay(hub, captured))
    assert login(client, "reset_window", "a-new-password-2").status_code == 302


def test_deactivation_ends_the_sessions_at_once_and_activation_does_not_revive_them(hub):
    hub.account("deact_window", "window", "130926-rs")
    hub.account("deact_admin", "admin")
    client, admin = client_of(hub), client_of(hub)
    assert login(client, "deact_window").status_code == 302 and login(admin, "deact_admin").status_code == 302
    captured = _cookie(client)
    admin.post("/admin/accounts/deact_window/deactivate", data={"csrf_token": csrf(admin)})
    admin.post("/admin/accounts/deact_window/activate", data={"csrf_token": csrf(admin)})
    assert not logged_in(_replay(hub, captured))


def test_login_starts_a_fresh_session(hub):
    hub.account("fresh_window", "window", "130926-rs")
    client = client_of(hub)
    with client.session_transaction() as planted:  # what an attacker fixed before the victim logs in
        planted["nonce"] = "fixed-by-attacker"
        planted["planted"] = "x"
    assert login(client, "fresh_window").status_code == 302
    with client.session_transaction() as fresh:
        assert "planted" not in fresh
        assert fresh["nonce"] != "fixed-by-attacker" and len(fresh["nonce"]) >= 16
        assert fresh["username"] == "fresh_window"
    first = _cookie(client)
    assert login(client, "fresh_window").status_code == 302
    with client.session_transaction() as again:
        assert again["nonce"] != "fixed-by-attacker"
    assert _cookie(client) != first


def test_the_secure_cookie_setting(hub, monkeypatch):
    assert DEFAULTS["SESSION_COOKIE_SECURE"] is False  # declared (and documented) with its default
    hub.account("secure_window", "window", "130926-rs")
    client = client_of(hub)
    response = login(client, "secure_window")
    assert "Secure" not in response.headers["Set-Cookie"]
    monkeypatch.setitem(hub.app.config, "SESSION_COOKIE_SECURE", True)
    response = login(client, "secure_window")
    assert "; Secure" in response.headers["Set-Cookie"] and "HttpOnly" in response.headers["Set-Cookie"]


def test_behind_a_proxy_the_client_address_comes_from_x_forwarded_for(hub, monkeypatch):
    from city_hub import create_app

    monkeypatch.setenv("LIANDONG_PROXY_HOPS", "1")
    proxied = create_app({"DATA_DIR": str(hub.data_dir), "SCHEDULER_ENABLED": False})
    client = at_address(proxied.test_client(), "127.0.0.1")
    client.post("/login", data={"username": "proxy_nobody", "password": "x" * 8, "csrf_token": csrf(client)},
                headers={"X-Forwarded-For": "192.0.2.7"})
    assert "address 192.0.2.7" in audit_rows(hub, "login.failed", "proxy_nobody")[0]["detail"]


# ------------------------------------------------------------------ next=


@pytest.mark.parametrize("target", [
    "/%09/evil.example/", "/%0a/x", "/%0d%0aSet-Cookie:%20x=1", "//evil.example/", "/%2F/evil.example/",
    "/\\evil.example/", "/%5Cevil.example/", "https://evil.example/", "evil.example", "/%E2%80%AE/x",
    "/%2509/evil.example/", "%2F%2Fevil.example",
])
def test_login_never_redirects_off_site(hub, target):
    hub.account("next_window", "window", "130926-rs")
    response = login(client_of(hub), "next_window", next_=target)
    assert response.status_code == 302, target
    assert response.headers["Location"] == "/", target


def test_login_follows_a_same_site_next(hub):
    hub.account("next_window", "window", "130926-rs")
    response = login(client_of(hub), "next_window", next_="/queue%3Fstatus%3DRECEIVED")
    assert response.headers["Location"] == "/queue?status=RECEIVED"


def test_safe_next_rules():
    assert safe_next("/cases/abc?x=1") == "/cases/abc?x=1"
    assert safe_next(None) == "/" and safe_next("") == "/"
    for bad in ("/\t/evil.example/", "/\n/x", "//evil", "/\\evil", "/%5C%5Cevil", "/%2F%2Fevil", "/ /x", "x/y",
                "/\u200b/x", "/%e2%80%8b/x"):
        assert safe_next(bad) == "/", bad


# ------------------------------------------------------------------ headers


def test_every_response_carries_the_security_headers(hub):
    client = client_of(hub)
    token = hub.account("hdr_window", "window", "130926-rs")
    responses = [client.get("/login"), client.get("/healthz"), client.get("/queue"), client.get("/no-such-page"),
                 client.get("/api/v1/cases/" + "0" * 32), client.get("/assets/liandong.css"),
                 client.get("/api/v1/catalog", headers={"Authorization": f"Bearer {token}"})]
    for response in responses:
        headers = response.headers
        where = f"{response.request.path} {response.status_code}"
        assert headers["Content-Security-Policy"] == "frame-ancestors 'none'", where
        assert headers["X-Frame-Options"] == "DENY", where
        assert headers["X-Content-Type-Options"] == "nosniff", where
        assert headers["Referrer-Policy"] == "same-origin", where
