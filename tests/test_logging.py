"""Each node process logs into a rotating file under its data folder; sync failures at WARNING."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time

import pytest
import requests
from network import free_port

from provisioning import nodes
from shared.core.logs import LOG_FILE, configure_logging


def test_a_served_node_writes_its_log_file_with_an_access_log(tmp_path):
    data = tmp_path / "hub"
    nodes.init_hub(data, "130926", "测试县政务服务中心")
    port = free_port()
    env = {**os.environ, "LIANDONG_SCHEDULER_ENABLED": "false", "LIANDONG_LOG_CONSOLE": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "provisioning.cli", "node", "serve", "--data", str(data),
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1].decode()
            time.sleep(0.1)
        # A search may carry a name or an ID number in its query string: it must not reach the log.
        requests.get(f"http://127.0.0.1:{port}/api/v1/cases?q=130926198001011234", timeout=5)
        time.sleep(0.3)
    finally:
        proc.terminate()
        console = proc.communicate(timeout=10)[1].decode()
    assert "liandong.access: GET /healthz 200 " in console  # LIANDONG_LOG_CONSOLE: settings' env layer
    log = (data / LOG_FILE).read_text(encoding="utf-8")
    assert "INFO liandong: hub 130926 serving on http://127.0.0.1:" in log
    assert "INFO liandong.access: GET /healthz 200 " in log
    assert re.search(r"INFO liandong\.access: GET /api/v1/cases \d{3} [\d.]+ms$", log, re.MULTILINE)
    assert "130926198001011234" not in log


@pytest.mark.usefixtures("restore_logging")
def test_the_log_file_is_size_bounded(tmp_path):
    path = configure_logging(tmp_path, {"LOG_MAX_BYTES": 2000, "LOG_BACKUPS": 2})
    for i in range(200):
        logging.getLogger("liandong.test").warning("line %d of a long day", i)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["liandong.log", "liandong.log.1", "liandong.log.2"]
    assert all(p.stat().st_size <= 2000 for p in path.parent.iterdir())


def test_a_failed_sync_round_is_logged_at_warning_with_its_reason(build_network, caplog):
    net = build_network(villages=1)
    village = net.village()
    net.township.stop()
    try:
        with caplog.at_level(logging.INFO, logger="liandong.sync"):
            assert "error" in village.sync()
    finally:
        net.township.start()
    failures = [r for r in caplog.records if r.name == "liandong.sync" and "failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.WARNING
    assert "130926100" in failures[0].getMessage() and "ConnectionError" in failures[0].getMessage()
