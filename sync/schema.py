"""Schema fragments of the sync roles: origin (village, township), relay (township), hub."""

# A node that creates envelopes: numbered 1, 2, 3… each linked to the id of the one before.
ORIGIN = """
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    envelope_id TEXT NOT NULL UNIQUE,
    prev TEXT NOT NULL,
    kind TEXT NOT NULL,
    case_id TEXT,
    document BLOB NOT NULL,
    attachments TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'custody', 'acked')),
    custody_at TEXT,
    acked_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX outbox_state ON outbox(state, seq);
-- Downlink messages applied, per issuer: nothing older is ever applied again.
CREATE TABLE downlink_cursors (
    issuer TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
"""

# Messages this node issues to the nodes below it, numbered per destination.
ISSUER = """
CREATE TABLE downlink (
    issuer TEXT NOT NULL,
    dest TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    document BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (issuer, dest, seq)
);
"""

# A township holding its villages' envelopes until the hub acknowledges them.
RELAY = """
CREATE TABLE custody (
    envelope_id TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    case_id TEXT,
    document BLOB NOT NULL,
    attachments TEXT NOT NULL DEFAULT '[]',
    received_at TEXT NOT NULL,
    forwarded_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX custody_origin ON custody(origin, seq);
-- Latest hub-signed cumulative acknowledgement per origin, served down to villages.
CREATE TABLE acks (
    origin TEXT PRIMARY KEY,
    acked_seq INTEGER NOT NULL,
    document BLOB NOT NULL
);
CREATE TABLE peer_status (
    node_id TEXT PRIMARY KEY,
    last_seen TEXT NOT NULL,
    last_push_count INTEGER NOT NULL DEFAULT 0
);
"""

HUB = """
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    tier TEXT NOT NULL CHECK (tier IN ('hub', 'township', 'village')),
    parent TEXT,
    name TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'revoked')),
    revoked_after_seq INTEGER,
    revoked_at TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE node_keys (
    kid TEXT PRIMARY KEY,
    node_id TEXT NOT NULL REFERENCES nodes(node_id),
    public_key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    retired_at TEXT
);
CREATE TABLE enrol_tokens (
    token_hash TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    parent TEXT NOT NULL,
    name TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    created_at TEXT NOT NULL
);
-- Every envelope accepted into an origin's chain: the unique keys make ingest idempotent.
CREATE TABLE inbox (
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    envelope_id TEXT NOT NULL UNIQUE,
    prev TEXT NOT NULL,
    kind TEXT NOT NULL,
    document BLOB NOT NULL,
    received_at TEXT NOT NULL,
    via TEXT NOT NULL,
    blobs_pending INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, seq)
);
-- Material files an accepted envelope names; its origin is acknowledged past it only once
-- every one of them has arrived (metadata is processed first, media follows).
CREATE TABLE inbox_blobs (
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (origin, seq, sha256)
);
CREATE INDEX inbox_blobs_sha ON inbox_blobs(sha256);
-- Envelopes that arrived ahead of a gap, applied once the gap is filled.
CREATE TABLE held (
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    envelope_id TEXT NOT NULL UNIQUE,
    document BLOB NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (origin, seq)
);
CREATE TABLE origin_heads (
    origin TEXT PRIMARY KEY,
    acked_seq INTEGER NOT NULL,
    acked_id TEXT NOT NULL,
    ack_document BLOB NOT NULL
);
CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY,
    origin TEXT,
    seq INTEGER,
    envelope_id TEXT,
    reason TEXT NOT NULL,
    detail TEXT,
    document BLOB,
    received_at TEXT NOT NULL,
    resolved_at TEXT,
    UNIQUE (envelope_id, reason)
);
-- Case events that arrived (from a deciding township) before the case itself.
CREATE TABLE orphan_events (
    event_id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    body BLOB NOT NULL
);
-- Hub-signed metadata, every published version.
CREATE TABLE metadata (
    role TEXT NOT NULL,
    version INTEGER NOT NULL,
    document BLOB NOT NULL,
    published_at TEXT NOT NULL,
    PRIMARY KEY (role, version)
);
"""

# Migration 12 (every tier applies it; only the hub fills it): the second stage of hub ingest.
# An envelope accepted into its origin's chain (and acknowledged) is queued here in acceptance
# order, and its content is applied to the case register from here (sync/apply.py).
APPLY_QUEUE = """
CREATE TABLE IF NOT EXISTS apply_queue (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL
);
"""

# Migration 14 (every tier applies it). ``relayed_ids``: the first envelope id a township took
# for each (origin, seq), so a different envelope with the same number (a village restored from
# an old backup, or a cloned key) is told from a late retry and sent on to the hub as a fork.
# ``blob_parking``: material files a node uploaded (hub, township) before any envelope named
# them; counted against the uploader's quota and removed after BLOB_PARK_SECONDS.
RELAY_GUARDS = """
CREATE TABLE IF NOT EXISTS relayed_ids (
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    envelope_id TEXT NOT NULL,
    PRIMARY KEY (origin, seq)
);
CREATE TABLE IF NOT EXISTS blob_parking (
    sha256 TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    parked_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS blob_parking_node ON blob_parking(node_id);
"""

# Migration 26 (every tier): the bytes of material files up to BLOB_INLINE_MAX_BYTES, kept in the
# node's SQLite file instead of one file each (sync/blobs.py): a batch of N scans becomes one
# transaction and one commit, where it was N file creations, N fsyncs and a folder fsync each.
# SQLite reads and writes blobs of ~10-20 KB faster than separate files
# (https://www.sqlite.org/fasterthanfs.html, https://www.sqlite.org/intern-v-extern-blob.html).
# A row is written only once its bytes hash to ``sha256``; ``blobs`` (the registry) is unchanged.
# A rowid table on purpose: rows this long would make a WITHOUT ROWID b-tree shallow and wide.
# The hub: when the relaying township took an envelope into custody, as it said in its push
# (its 接件 of the cases it decides, until its own record comes, docs/sync-protocol.md §7.2).
# A table of its own (every tier applies every migration; only the hub has an inbox).
INBOX_HELD = """
CREATE TABLE IF NOT EXISTS inbox_held (
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    held_at TEXT NOT NULL,
    PRIMARY KEY (origin, seq)
) WITHOUT ROWID;
"""

BLOB_BYTES = """
CREATE TABLE IF NOT EXISTS blob_bytes (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);
"""

# Migration 28 (every tier; only a township fills it): village envelopes a township took into
# custody whose following (the station's own register: its villages' cases, the items it decides)
# runs after its answer, from this queue, in the order custody took them (township_node/
# relay_service.py). A copy of the document: the hub's acknowledgement may release custody first.
# ``follow_waiting``: a hub message about a case still in the queue when it came down (kept in
# ``downlink`` as every relayed message), applied to the register once the case is followed.
FOLLOW_QUEUE = """
CREATE TABLE IF NOT EXISTS follow_queue (
    id INTEGER PRIMARY KEY,
    envelope_id TEXT NOT NULL,
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    case_id TEXT,
    document BLOB NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS follow_queue_case ON follow_queue(case_id);
CREATE TABLE IF NOT EXISTS follow_waiting (
    issuer TEXT NOT NULL,
    dest TEXT NOT NULL,
    seq INTEGER NOT NULL,
    case_id TEXT NOT NULL,
    PRIMARY KEY (issuer, dest, seq)
);
"""

# Migration 30 (every tier; only the hub fills it): the hub's inbox without a unique index on
# ``envelope_id`` (issue 12, ingest). The id is the SHA-256 of the signed bytes, which name the
# origin and the seq, so the primary key (origin, seq) already makes it unique; its own index,
# random by nature, cost every accepted envelope a B-tree page of an index as large as every
# envelope the county ever sent, and only a diagnostic ever looked an envelope up by it. A
# village or township has no inbox: it gets an empty one, as it got ``apply_queue``.
_INBOX_COLUMNS = """(
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    envelope_id TEXT NOT NULL,
    prev TEXT NOT NULL,
    kind TEXT NOT NULL,
    document BLOB NOT NULL,
    received_at TEXT NOT NULL,
    via TEXT NOT NULL,
    blobs_pending INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, seq)
)"""
INBOX_BY_ORIGIN = f"""
CREATE TABLE IF NOT EXISTS inbox {_INBOX_COLUMNS};
CREATE TABLE inbox_by_origin {_INBOX_COLUMNS};
INSERT INTO inbox_by_origin(rowid, origin, seq, envelope_id, prev, kind, document, received_at, via, blobs_pending)
    SELECT rowid, origin, seq, envelope_id, prev, kind, document, received_at, via, blobs_pending FROM inbox;
DROP TABLE inbox;
ALTER TABLE inbox_by_origin RENAME TO inbox;
"""
