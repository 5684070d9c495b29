"""Every setting a node reads, declared once with its default and help text.

A node's Flask config is built from these defaults, then the instance ``config.py`` written by
``liandong node init``/``hub init`` into the node's data folder, then ``LIANDONG_*`` environment
variables (``from_prefixed_env``). ``docs/operations.md`` documents every one (a test checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One configuration key of a node."""

    name: str
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("NODE_ID", None, "This node's 区划代码: 6 digits (hub), 9 (township) or 12 (village)."),
    Setting("TIER", None, "hub, township or village."),
    Setting("NODE_NAME", "", "The node's Chinese name, shown in page headers and documents."),
    Setting("RECONSIDERATION_BODY", "", "The 行政复议机关 named in refusals (不予受理, 不予许可) issued here; empty: the "
            "county's 人民政府, from the hub's name (肃宁县政务服务中心 → 肃宁县人民政府)."),
    Setting("COURT_NAME", "", "The 人民法院 named in refusals for 行政诉讼; empty: the county's basic court "
            "(肃宁县人民法院)."),
    Setting("SECRET_KEY", None, "Flask session/CSRF secret, generated at init; never committed. A node refuses to "
            "start without one (or with a short or well-known one)."),
    Setting("SESSION_COOKIE_SECURE", False, "Send the login cookie only over HTTPS: set True where the node is served "
            "through TLS (the hub behind nginx with a certificate)."),
    Setting("PROXY_HOPS", 0, "Reverse proxies in front of the node (1 for the hub behind nginx): the client address "
            "for login throttling and the audit is then taken from X-Forwarded-For."),
    Setting("LOGIN_MAX_FAILURES", 5, "Failed logins for one account within the window that lock it."),
    Setting("LOGIN_MAX_FAILURES_PER_ADDRESS", 20, "Failed logins from one client address within the window that lock "
            "that address."),
    Setting("LOGIN_FAILURE_WINDOW_SECONDS", 900, "The window in which failed logins are counted."),
    Setting("LOGIN_LOCK_SECONDS", 900, "How long a lock lasts; an admin lifts it earlier on the accounts page or with "
            "`liandong account unlock`."),
    Setting("DATABASE", "node.sqlite3", "SQLite file name, relative to the data folder."),
    Setting("PARENT_URL", None, "Base URL of the parent node (the township for a village, the hub for a township)."),
    Setting("PARENT_ID", None, "区划代码 of the parent node."),
    Setting("HUB_ID", None, "区划代码 of the county hub."),
    Setting("SYNC_INTERVAL_SECONDS", 5, "Seconds between sync rounds when there is nothing to send (push the outbox, pull acks and downlink); "
            "a backlog drains back to back, and a township forwards what arrives at once."),
    Setting("SYNC_BATCH", 200, "Envelopes sent in one push request at first, and again after a failed or slow push."),
    Setting("SYNC_BATCH_MAX", 1000, "Envelopes one push request may grow to while a backlog drains: the push size doubles "
            "after a full push the parent answered within half of SYNC_PUSH_SECONDS, halves after one slower than it "
            "(never below SYNC_BATCH)."),
    Setting("SYNC_PUSH_SECONDS", 2.0, "How long one push request may take before the next one is made smaller: a slow "
            "link keeps small pushes (less to send again when it drops), a fast one drains in large ones."),
    Setting("SYNC_BATCH_BYTES", 8 * 1024 * 1024, "Largest total of envelope bytes sent in one push request (keep it "
            "well under the parent's MAX_PUSH_BYTES: the JSON around the envelopes adds a little)."),
    Setting("BLOB_PARK_QUOTA_BYTES", 32 * 1024 * 1024, "Hub and township: bytes of material files one calling node "
            "may upload before any envelope names them (parked blobs); beyond it further uploads are refused."),
    Setting("BLOB_PARK_SECONDS", 24 * 3600, "Hub and township: a parked material file that no envelope has named "
            "after this long is removed by the scheduled rule blob_parking."),
    Setting("BLOB_INLINE_MAX_BYTES", 256 * 1024, "Material files up to this size are kept as rows of the node's "
            "SQLite file (table blob_bytes: a batch of scans is one transaction, no file per scan); larger ones as "
            "files under blobs/. 0 keeps every new one as a file. Files already stored stay where they are."),
    Setting("SYNC_TIMEOUT_SECONDS", 10, "HTTP timeout for one sync request."),
    Setting("SYNC_NOW_TIMEOUT_SECONDS", 5, "HTTP timeout of each request of the round an agent starts with 立即同步 "
            "(shorter than SYNC_TIMEOUT_SECONDS: the agent is waiting; the page then says the round gave up)."),
    Setting("SYNC_WRITE_THROUGH_SECONDS", 2.0, "Township: how long a village's small push (see "
            "SYNC_WRITE_THROUGH_MAX_ENVELOPES) may wait for the hub's acknowledgement, forwarded at once, to answer "
            "with it instead of a custody receipt alone (the village then needs no second request for it); 0 turns "
            "this off. The hub being slow or offline delays the village's answer by at most this long."),
    Setting("SYNC_PULL_WAIT_SECONDS", 2, "Village: a pull while the township holds envelopes of this node the "
            "hub has not acknowledged asks it to wait up to this long (and at most its SYNC_WRITE_THROUGH_SECONDS) "
            "for the hub's next acknowledgement (whole seconds), so a drained backlog's acks arrive as they come "
            "without asking again and again; the township answers sooner when its forwarding round ends without "
            "one. 0: never."),
    Setting("SYNC_WRITE_THROUGH_MAX_ENVELOPES", 10, "Township: largest push (in envelopes) answered write-through "
            "(SYNC_WRITE_THROUGH_SECONDS); a larger one, a backlog draining, is answered at once with a custody "
            "receipt, so the village sends its next batch while this one goes on to the hub."),
    Setting("SYNC_PUSH_AHEAD", True, "Village: while a backlog of envelopes without material files drains, send "
            "each push while the answer to the one before is applied (the village's disk work and its township's "
            "overlap); false: one push, then its answer, then the next."),
    Setting("SYNC_BACKOFF_MAX_SECONDS", 300, "Upper bound of the exponential retry backoff when the parent is unreachable."),
    Setting("MAX_ATTACHMENT_BYTES", 10 * 1024 * 1024, "Largest single material file accepted."),
    Setting("MAX_CASE_ATTACHMENT_BYTES", 40 * 1024 * 1024, "Largest total of material files for one case."),
    Setting("MAX_CONTENT_LENGTH", 512 * 1024 * 1024, "Flask's overall cap on any request body, in bytes; the "
            "per-route limits below apply within it."),
    Setting("MAX_FORM_BYTES", 1024 * 1024, "Largest body of a page form or a JSON API call without material files "
            "(and of sync pull, blob status and enrolment requests)."),
    Setting("MAX_UPLOAD_BYTES", 56 * 1024 * 1024, "Largest body of a request that carries material files (the "
            "new-case wizard, POST /api/v1/cases with Base64 materials, project filing, site-visit photos, the "
            "catalog and calendar uploads)."),
    Setting("MAX_PUSH_BYTES", 16 * 1024 * 1024, "Largest body of POST /sync/v1/push (one batch of envelopes)."),
    Setting("MAX_BLOB_CHUNK_BYTES", 1024 * 1024, "Largest body of PUT /sync/v1/blobs/<sha256> (one chunk; "
            "senders use 256 KiB)."),
    Setting("MAX_BUNDLE_BYTES", 512 * 1024 * 1024, "Largest U盘 bundle file accepted by the bundle import pages."),
    Setting("DISK_RESERVE_BYTES", 64 * 1024 * 1024, "Free disk below which new cases are refused with a clear message."),
    Setting("MAX_CLOCK_SKEW_SECONDS", 600, "How far in the future a peer's clock may be before its timestamps are refused."),
    Setting("APPLY_QUIET_SECONDS", 0.05, "Hub: how long pushes must pause before accepted envelopes are applied to the "
            "case register (a burst is acknowledged first)."),
    Setting("APPLY_MAX_LAG_SECONDS", 10.0, "Hub: the longest accepted envelopes wait for a pause in pushes; after that "
            "they are applied alongside them."),
    Setting("FOLLOW_QUIET_SECONDS", 0.5, "Township: how long its villages' pushes must pause before custody queued "
            "for following (FOLLOW_INLINE_MAX_ENVELOPES) is followed: a village draining a backlog pushes back to "
            "back, and its batches are taken and forwarded first; the station's register follows when they pause."),
    Setting("FOLLOW_MAX_LAG_SECONDS", 2.0, "Township: the longest queued custody waits for its villages to pause "
            "(FOLLOW_QUIET_SECONDS); while their pushes go on, one chunk of 500 envelopes is followed each time this "
            "has passed: a county's steady trickle is kept up with, a village's drain is not slowed."),
    Setting("FOLLOW_INLINE_MAX_ENVELOPES", 10, "Township: a village's push of at most this many envelopes is followed "
            "in the station's own register (its villages' cases, the items it decides: a 秒批 decided in the "
            "answer) before the answer, when nothing waits to be followed; a larger push, a backlog draining, is "
            "answered once in custody and followed right after from a queue, in custody order. 0 queues every push."),
    Setting("METADATA_TTL_DAYS", 30, "Days a signed catalog/registry stays fresh before nodes show it as stale."),
    Setting("CLOCK_START", None, "Demo/sim only: ISO time the node's clock starts at."),
    Setting("CLOCK_SPEED", 1.0, "Demo/sim only: how many times faster than real time the clock runs."),
    Setting("SUPERVISION_INTERVAL_SECONDS", 60, "Seconds between passes of the deciding node's rules (deemed acceptance, 容缺 deadlines, 电子监察)."),
    Setting("MALLOC_ARENAS", None, "Linux (glibc) only, `liandong node serve`: malloc arenas of the process, set before "
            "any thread starts; empty: the tier's (1 at a village, 2 at a township or hub). An operator's own "
            "MALLOC_ARENA_MAX environment variable wins. No effect on Windows or macOS."),
    Setting("GC_YOUNG_THRESHOLD", None, "`liandong node serve`: new container objects between two collections of "
            "Python's youngest generation; empty: the tier's (700, Python's own, at a village; 10,000 at a township "
            "or hub). Serve also freezes what start-up built (gc.freeze), so no full collection scans the app "
            "again; 0 leaves the collector as Python sets it. Every platform."),
    Setting("MALLOC_TRIM_IDLE", True, "Linux (glibc) only, `liandong node serve`: once no request is in flight, give "
            "the heap's free pages back to the system (malloc_trim, ~0.4 ms after the answer is sent). No effect on "
            "Windows or macOS, whose heaps decommit freed memory themselves."),
    Setting("SQLITE_CACHE_KIB", None, "Page cache of each SQLite connection, in KiB; empty: the tier's (512 at a "
            "village, SQLite's own 2,000 at a township or hub). Every platform."),
    Setting("SYNC_CACHE_KIB", 2048, "Page cache, in KiB, of the sync round's connection while it applies its "
            "parent's answer (custody receipts and acknowledgements of a whole batch touch many case pages), if "
            "its own is smaller; back to its own size afterwards. 0: the connection's own. Every platform."),
    Setting("SCHEDULER_ENABLED", True, "Run this node's scheduled jobs (sync, supervision) in the web process."),
    Setting("PUBLIC_URL", None, "This node's own base URL, as its children reach it."),
    Setting("LOG_LEVEL", "INFO", "Level of the node's own loggers (liandong.*): DEBUG, INFO, WARNING or ERROR."),
    Setting("LOG_MAX_BYTES", 5 * 1024 * 1024, "Size at which <data>/logs/liandong.log is rotated."),
    Setting("LOG_BACKUPS", 5, "How many rotated log files are kept (liandong.log.1 … .N); older ones are deleted."),
    Setting("LOG_CONSOLE", False, "Also log to the console (development, the demo)."),
    Setting("HEALTH_PARENT_SILENCE_SECONDS", 1800, "/healthz answers degraded (503) when the node has not reached "
            "its parent for longer than this (or, never having reached it, since it started)."),
    Setting("METRICS_TOKEN", None, "Hub and township: bearer token that may read /metrics (for Prometheus); "
            "without it only an admin or supervisor session can. Keep it secret."),
    Setting("OFFLINE_BANNER_SECONDS", 600, "Village/township: with no contact with the parent for this long, every page "
            "shows the offline banner (cases are still taken and queued)."),
    Setting("PERSONAL_DATA_RETENTION_DAYS", 90, "Village: days after a case is closed (已办结, 撤回 or 终止) and the hub "
            "has acknowledged everything about it before the village PC purges its personal data (身份证号, phone, "
            "address and other personal form fields, material files), keeping a masked stub (PIPL 最小必要)."),
    Setting("SCANNER_FOLDER", None, "Village (or township window): the folder the scanner software saves into; the wizard's "
            "材料 step lists its image/PDF files to attach, and can move attached ones to its done/ subfolder."),
)

DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}
