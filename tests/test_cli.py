"""The command line speaks to an operator: one line 错误：<中文>（code）, no traceback; hidden passwords."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from provisioning import nodes
from provisioning.cli import main
from shared.core import storage
from shared.rules.passwords import password_problem
from shared.services import accounts

STRONG = "long-password-1"


def _run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def _assert_operator_error(result, code: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception.__class__ is SystemExit
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("错误：") and lines[-1].endswith(f"（{code}）"), result.output


@pytest.fixture
def hub(tmp_path):
    nodes.init_hub(tmp_path / "hub", "130926", "测试县政务服务中心")
    return tmp_path / "hub"


def test_a_bad_enrolment_token_is_one_line_without_traceback(tmp_path):
    result = _run("node", "init", "--data", tmp_path / "v", "--token", "bad", "--parent-url", "http://127.0.0.1:9",
                  "--name", "测试村")
    _assert_operator_error(result, "bad_token")
    assert "注册令牌格式错误" in result.output


def test_an_unreachable_parent_and_a_folder_that_is_no_node(tmp_path):
    token = "LD1.130926100201." + "a" * 24 + ".0123456789abcdef"
    result = _run("node", "init", "--data", tmp_path / "v", "--token", token, "--parent-url", "http://127.0.0.1:9",
                  "--name", "测试村")
    _assert_operator_error(result, "parent_unreachable")
    _assert_operator_error(_run("node", "status", "--data", tmp_path / "nothing"), "not_a_node")
    _assert_operator_error(_run("hub", "init", "--data", tmp_path / "h", "--code", "12", "--name", "x"),
                           "bad_node_code")


def test_a_domain_error_keeps_its_code(hub):
    result = _run("provision", "token", "--data", hub, "--node-code", "999", "--name", "测试")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("错误：") and result.output.strip().endswith("）")


def _account(hub, username):
    conn = storage.connect(hub / "node.sqlite3")
    try:
        return accounts.authenticate(conn, username, STRONG)
    finally:
        conn.close()


def test_account_password_is_prompted_hidden_and_confirmed(hub):
    result = _run("account", "create", "--data", hub, "--username", "rs_window", "--role", "window",
                  "--name", "人社窗口", "--office", "130926-rs", input=f"{STRONG}\n{STRONG}\n")
    assert result.exit_code == 0, result.output
    assert STRONG not in result.output  # hidden input: never echoed
    assert "密码" in result.output and "再次输入密码" in result.output
    assert _account(hub, "rs_window") is not None


def test_password_from_stdin_for_scripts(hub):
    result = _run("account", "create", "--data", hub, "--username", "script_admin", "--role", "admin",
                  "--name", "管理员", "--password-stdin", input=f"{STRONG}\n")
    assert result.exit_code == 0, result.output
    assert _account(hub, "script_admin") is not None


def test_password_on_the_command_line_is_gone(hub):
    result = _run("account", "create", "--data", hub, "--username", "x", "--role", "admin", "--name", "x",
                  "--password", STRONG)
    assert result.exit_code == 2 and "--password" in result.output


@pytest.mark.parametrize("weak", ["short-1", "aaaaaaaaaaaaaa", "abcdefghijkl", "1234567890", "Password123",
                                  "ab-ab-ab-ab-"])
def test_trivial_passwords_are_refused(hub, weak):
    result = _run("account", "create", "--data", hub, "--username", "weak", "--role", "admin", "--name", "x",
                  "--password-stdin", input=weak + "\n")
    _assert_operator_error(result, "weak_password")


def test_password_rule():
    assert password_problem("correct horse battery") is None  # a passphrase: letters and spaces
    assert password_problem(STRONG) is None
    assert password_problem("123456789") == "密码至少10位"
    assert "常见" in password_problem("qwertyuiop")
    assert "简单" in password_problem("zzzzzzzzzzzz")
