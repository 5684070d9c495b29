"""gunicorn settings for the hub: ``gunicorn -c deploy/gunicorn.conf.py 'city_hub:create_app()'``.

The hub's data folder comes from LIANDONG_DATA_DIR. Sync workers (2 × CPU, the sharkbench and
flask docs starting point); the hub's scheduled rules run in one separate process
(``liandong hub jobs``), so the web workers start no scheduler.
"""

import multiprocessing
import os

from shared.core.logs import logging_config

bind = os.environ.get("LIANDONG_BIND", "127.0.0.1:8600")
workers = int(os.environ.get("LIANDONG_WORKERS", multiprocessing.cpu_count() * 2))
worker_class = "sync"
timeout = 120  # a push of 200 envelopes with material files on a slow disk
max_requests = 5000
max_requests_jitter = 500
# No gunicorn access log: its request line carries query strings (a search for a name or an ID
# number). The app logs each request itself on liandong.access (path only), and with several
# workers the hub's log goes to stderr (the systemd journal) rather than one rotating file.
logconfig_dict = logging_config(None, {"LOG_CONSOLE": True}, to_file=False)
raw_env = ["LIANDONG_SCHEDULER_ENABLED=false"]
