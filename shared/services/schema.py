"""Schema fragments owned by the shared library; each node's ``db.py`` composes its schema.

Timestamps are UTC ISO-8601 strings with a ``Z`` (``shared.core.clock.iso``). JSON columns hold
canonical JSON text. Signed documents are stored as the exact bytes received.
"""

COMMON = """
CREATE TABLE node_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE accounts (
    username TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL,
    office TEXT,
    password_hash TEXT NOT NULL,
    token_hash TEXT UNIQUE,
    active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
-- Append-only: who did what, when; reads of personal data included.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
-- Highest trusted version of each kind of hub-signed metadata (rollback protection).
CREATE TABLE trusted_metadata (
    role TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    expires TEXT,
    document BLOB NOT NULL,
    received_at TEXT NOT NULL
);
-- Highest request nonce seen per node: node-signed requests cannot be replayed.
CREATE TABLE request_nonces (
    node_id TEXT PRIMARY KEY,
    nonce INTEGER NOT NULL
);
-- The case (办件) as far as this node knows it.
CREATE TABLE cases (
    case_id TEXT PRIMARY KEY,
    receipt_no TEXT NOT NULL UNIQUE,
    item_code TEXT NOT NULL,
    item_name TEXT NOT NULL,
    catalog_version INTEGER NOT NULL,
    origin TEXT NOT NULL,
    agent TEXT,
    applicant_name TEXT NOT NULL,
    id_number TEXT NOT NULL,
    phone TEXT,
    form TEXT NOT NULL,
    status TEXT NOT NULL,
    route_level TEXT NOT NULL,
    route_office TEXT NOT NULL,
    limit_wd INTEGER NOT NULL DEFAULT 0,
    submitted_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    accepted_at TEXT,
    decision TEXT,
    sync_state TEXT NOT NULL DEFAULT 'local'
);
CREATE INDEX cases_office_status ON cases(route_office, status);
CREATE INDEX cases_origin ON cases(origin);
CREATE TABLE case_materials (
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    code TEXT NOT NULL,
    filename TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (case_id, code, sha256)
);
CREATE TABLE case_events (
    event_id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    at TEXT NOT NULL,
    node TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    detail TEXT
);
CREATE INDEX case_events_case ON case_events(case_id, at);
-- Content-addressed material files; the bytes live in <data>/blobs/<aa>/<sha256>.
CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    received_at TEXT NOT NULL
);
"""

# Migration 2: 电子监察 alerts, one row per case and level reached.
SUPERVISION = """
CREATE TABLE supervision_alerts (
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    level TEXT NOT NULL CHECK (level IN ('warning', 'yellow', 'red')),
    office TEXT NOT NULL,
    deadline TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (case_id, level)
);
"""

# Migration 3: signed 制式文书 held by this node (issued here or received with a decision).
DOCUMENTS = """
CREATE TABLE documents (
    doc_id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    number TEXT NOT NULL,
    code TEXT NOT NULL,
    issuer TEXT NOT NULL,
    document BLOB NOT NULL,
    issued_at TEXT NOT NULL
);
CREATE INDEX documents_case ON documents(case_id);
CREATE INDEX documents_code ON documents(code);
"""
