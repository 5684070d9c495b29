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

# 好差评, 回访, 投诉
FEEDBACK = """
-- 好差评: one rating per case (the primary key enforces it on every node).
CREATE TABLE case_ratings (
    case_id TEXT PRIMARY KEY REFERENCES cases(case_id),
    level INTEGER NOT NULL CHECK (level BETWEEN 1 AND 5),
    comment TEXT NOT NULL DEFAULT '',
    channel TEXT NOT NULL,
    node TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    office TEXT NOT NULL,
    rated_at TEXT NOT NULL,
    received_at TEXT NOT NULL
);
-- 回访 of a bad rating (hub): one per case, due in working days, closed with 整改情况.
CREATE TABLE followups (
    followup_id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL UNIQUE REFERENCES cases(case_id),
    level INTEGER NOT NULL,
    office TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    deadline TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    outcome TEXT,
    closed_by TEXT,
    closed_at TEXT
);
CREATE INDEX followups_open ON followups(status, deadline);
-- 投诉: at the node that took it ('sent' until answered) and at the hub ('open' until answered).
CREATE TABLE complaints (
    complaint_id TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    case_id TEXT,
    office TEXT,
    complainant_name TEXT NOT NULL,
    complainant_phone TEXT NOT NULL,
    content TEXT NOT NULL,
    taken_by TEXT NOT NULL,
    taken_at TEXT NOT NULL,
    received_at TEXT,
    deadline TEXT,
    status TEXT NOT NULL CHECK (status IN ('sent', 'open', 'answered')),
    answer TEXT,
    answered_by TEXT,
    answered_at TEXT
);
CREATE INDEX complaints_status ON complaints(status, deadline);
"""

# 联合审批 opinions, 审管互动 pushes
JOINT = """
CREATE TABLE IF NOT EXISTS joint_opinions (
    case_id TEXT NOT NULL,
    department_code TEXT NOT NULL,
    office TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    deadline TEXT NOT NULL,
    deemed_consent INTEGER NOT NULL DEFAULT 0,
    opinion TEXT CHECK (opinion IS NULL OR opinion IN ('agree', 'disagree', 'deemed')),
    comment TEXT NOT NULL DEFAULT '',
    answered_by TEXT,
    answered_at TEXT,
    PRIMARY KEY (case_id, office)
);
CREATE INDEX IF NOT EXISTS joint_opinions_by_office ON joint_opinions(office, opinion);
CREATE INDEX IF NOT EXISTS joint_opinions_open ON joint_opinions(opinion, deadline);
CREATE TABLE IF NOT EXISTS regulator_pushes (
    case_id TEXT PRIMARY KEY,
    office TEXT NOT NULL,
    item_code TEXT NOT NULL,
    item_name TEXT NOT NULL,
    trigger_status TEXT NOT NULL,
    pushed_at TEXT NOT NULL,
    claim_due TEXT NOT NULL,
    claimed_by TEXT,
    claimed_at TEXT,
    feedback TEXT NOT NULL DEFAULT '',
    flagged_at TEXT
);
CREATE INDEX IF NOT EXISTS regulator_pushes_by_office ON regulator_pushes(office, claimed_at);
"""

# 项目代办
PROJECTS = """
CREATE TABLE IF NOT EXISTS projects (
    project_id TEXT PRIMARY KEY,
    enterprise_name TEXT NOT NULL,
    credit_code TEXT NOT NULL,
    project_name TEXT NOT NULL,
    location TEXT NOT NULL,
    contact TEXT NOT NULL DEFAULT '',
    agent TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS projects_by_code ON projects(credit_code);
-- A case belongs to at most one project.
CREATE TABLE IF NOT EXISTS project_cases (
    case_id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(project_id),
    linked_by TEXT NOT NULL,
    linked_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS project_cases_by_project ON project_cases(project_id, linked_at);
"""

# the village's 暂存 drafts
DRAFTS = """
CREATE TABLE IF NOT EXISTS drafts (
    draft_id TEXT PRIMARY KEY,
    item_code TEXT NOT NULL,
    item_name TEXT NOT NULL,
    applicant_name TEXT NOT NULL DEFAULT '',
    step TEXT NOT NULL,
    state TEXT NOT NULL,
    agent TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drafts_updated ON drafts(updated_at);
"""

# per-case facts for statistics (the hub keeps them)
CASE_FACTS = """
CREATE TABLE case_facts (
    case_id TEXT PRIMARY KEY REFERENCES cases(case_id),
    accepted_at TEXT,
    deadline TEXT,
    decided_at TEXT,
    decision TEXT,
    working_days INTEGER,
    received_at TEXT,
    delivered INTEGER NOT NULL,
    decision_any INTEGER NOT NULL,
    counted INTEGER NOT NULL,
    on_time INTEGER NOT NULL,
    transmitted INTEGER NOT NULL,
    live INTEGER NOT NULL,
    computed_at TEXT NOT NULL
);
CREATE TABLE case_facts_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TRIGGER case_facts_case_update AFTER UPDATE ON cases
    BEGIN DELETE FROM case_facts WHERE case_id IN (OLD.case_id, NEW.case_id); END;
CREATE TRIGGER case_facts_case_delete AFTER DELETE ON cases
    BEGIN DELETE FROM case_facts WHERE case_id = OLD.case_id; END;
""" + (_CASE_FACTS_EVENT_TRIGGERS := """
CREATE TRIGGER case_facts_event_insert AFTER INSERT ON case_events
    WHEN NEW.from_status IS NEW.to_status BEGIN DELETE FROM case_facts WHERE case_id = NEW.case_id; END;
CREATE TRIGGER case_facts_event_update AFTER UPDATE ON case_events
    BEGIN DELETE FROM case_facts WHERE case_id IN (OLD.case_id, NEW.case_id); END;
CREATE TRIGGER case_facts_event_delete AFTER DELETE ON case_events
    BEGIN DELETE FROM case_facts WHERE case_id = OLD.case_id; END;
""")

# list-page indexes
LIST_INDEXES = """
CREATE INDEX IF NOT EXISTS cases_origin_submitted ON cases(origin, submitted_at);
CREATE INDEX IF NOT EXISTS cases_office_status_submitted ON cases(route_office, status, submitted_at);
CREATE INDEX IF NOT EXISTS cases_status_submitted ON cases(status, submitted_at);
CREATE INDEX IF NOT EXISTS cases_submitted ON cases(submitted_at);
"""

# single-column indexes the composite ones cover
DROP_REDUNDANT_INDEXES = """
DROP INDEX IF EXISTS cases_origin;
DROP INDEX IF EXISTS cases_office_status;
"""

# session epochs (server-side logout) and login throttling
SESSIONS = """
ALTER TABLE accounts ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
-- Recent failed logins per subject: 'account:<username>' or 'address:<client address>'.
CREATE TABLE login_failures (
    subject TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    first_at TEXT NOT NULL,
    locked_until TEXT
);
"""

# 绿色通道 for key projects and 超时默认 for 亿元以上 projects (seed 002 §6, seed 004 §8): the
# project's key mark, investment (万元) and named 项目代办员; a case's green mark on every node
# that holds it (its queue sorts it first).
GREEN_CHANNEL = """
ALTER TABLE projects ADD COLUMN key_project INTEGER NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN investment_wan INTEGER;
ALTER TABLE projects ADD COLUMN key_agent TEXT;
ALTER TABLE projects ADD COLUMN key_marked_by TEXT;
ALTER TABLE projects ADD COLUMN key_marked_at TEXT;
ALTER TABLE cases ADD COLUMN green_channel INTEGER NOT NULL DEFAULT 0;
"""

# 电子证照 (seed 004 §10): the licences this node holds (issued here or received with a
# decision), by holder; a revocation is kept beside the signed record, which never changes.
LICENCES = """
CREATE TABLE IF NOT EXISTS licences (
    doc_id TEXT PRIMARY KEY REFERENCES documents(doc_id),
    number TEXT NOT NULL,
    case_id TEXT NOT NULL,
    item_code TEXT NOT NULL,
    holder_id TEXT NOT NULL,
    holder_name TEXT NOT NULL,
    issuer TEXT NOT NULL,
    valid_until TEXT,
    issued_at TEXT NOT NULL,
    revoked_at TEXT,
    revoke_reason TEXT,
    revoked_by TEXT
);
CREATE INDEX IF NOT EXISTS licences_by_holder ON licences(holder_id, issued_at);
"""

# The audit log made tamper-evident (shared/core/audit.py): a hash chain, and no way to reuse
# an id. Without the last trigger an ``INSERT OR REPLACE`` with an existing id would delete the
# old row silently: REPLACE does not fire DELETE triggers (recursive_triggers is off).
AUDIT_CHAIN = """
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN row_hash TEXT;
CREATE TRIGGER audit_log_no_reuse BEFORE INSERT ON audit_log
WHEN NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_chained BEFORE INSERT ON audit_log
WHEN NEW.row_hash IS NULL OR NEW.prev_hash IS NOT COALESCE(
    (SELECT row_hash FROM audit_log ORDER BY id DESC LIMIT 1), '0000000000000000000000000000000000000000000000000000000000000000')
BEGIN SELECT RAISE(ABORT, 'audit_log rows must be chained: write them with shared.core.audit.audit'); END;
"""

# cases not yet at the hub, per origin: an acknowledgement touches only these (issue 12)
CASES_NOT_AT_HUB = """
CREATE INDEX IF NOT EXISTS cases_not_at_hub ON cases(origin) WHERE sync_state IN ('pending', 'custody');
"""

# personal data purged at the village after the retention time (the stub keeps receipt and state)
PERSONAL_DATA_PURGE = """
ALTER TABLE cases ADD COLUMN purged_at TEXT;
-- A document fetched again from the parent for reprinting a purged case (kept a day).
ALTER TABLE documents ADD COLUMN refetched_at TEXT;
CREATE INDEX IF NOT EXISTS cases_unpurged_closed ON cases(origin, status, updated_at) WHERE purged_at IS NULL;
"""

# 规范收费: what the window recorded (payments, exemptions, refunds), never a payment gateway
FEES = """
CREATE TABLE fee_records (
    record_id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    office TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('payment', 'exemption', 'refund')),
    amount_fen INTEGER NOT NULL CHECK (amount_fen >= 0),
    receipt_no TEXT,
    payer TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    refund_of TEXT REFERENCES fee_records(record_id),
    recorded_by TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    day TEXT NOT NULL
);
-- A 票据号 is used once per office; a payment is refunded once; a case is exempted once.
CREATE UNIQUE INDEX fee_records_receipt ON fee_records(office, receipt_no) WHERE receipt_no IS NOT NULL;
CREATE UNIQUE INDEX fee_records_refund ON fee_records(refund_of) WHERE refund_of IS NOT NULL;
CREATE UNIQUE INDEX fee_records_exemption ON fee_records(case_id) WHERE kind = 'exemption';
CREATE INDEX fee_records_case ON fee_records(case_id, recorded_at);
CREATE INDEX fee_records_day ON fee_records(office, day, recorded_at);
"""

# 首问负责 and 咨询登记: inquiries at any node, seen through by the first responder
INQUIRIES = """
CREATE TABLE inquiries (
    inquiry_id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    first_responder TEXT NOT NULL,
    asker_name TEXT NOT NULL,
    asker_phone TEXT NOT NULL DEFAULT '',
    question TEXT NOT NULL,
    item_code TEXT,
    item_name TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    outcome TEXT CHECK (outcome IS NULL OR outcome IN ('answered', 'referred', 'case')),
    answer TEXT NOT NULL DEFAULT '',
    referred_to TEXT NOT NULL DEFAULT '',
    consultation INTEGER NOT NULL DEFAULT 0,
    draft_id TEXT,
    case_id TEXT,
    opened_at TEXT NOT NULL,
    closed_by TEXT,
    closed_at TEXT
);
CREATE INDEX inquiries_status ON inquiries(status, opened_at);
CREATE INDEX inquiries_opened ON inquiries(opened_at);
CREATE UNIQUE INDEX inquiries_draft ON inquiries(draft_id) WHERE draft_id IS NOT NULL;
"""

# 预约: slots and decided requests at the owning node; requests and their answers at the agent's node
APPOINTMENTS = """
CREATE TABLE appointment_slots (
    slot_id TEXT PRIMARY KEY,
    office TEXT NOT NULL,
    day TEXT NOT NULL,
    start TEXT NOT NULL,
    capacity INTEGER NOT NULL CHECK (capacity > 0),
    published_by TEXT NOT NULL,
    published_at TEXT NOT NULL,
    UNIQUE (office, day, start)
);
-- One row per request the owner received, decided once, in the order received. A seat is held by
-- one booking at a time and a villager holds one seat per slot: unique indexes, never a check first.
CREATE TABLE appointments (
    request_id TEXT PRIMARY KEY,
    slot_id TEXT REFERENCES appointment_slots(slot_id),
    office TEXT NOT NULL,
    day TEXT NOT NULL,
    start TEXT NOT NULL,
    seat INTEGER,
    origin TEXT NOT NULL,
    agent TEXT NOT NULL,
    villager_name TEXT NOT NULL,
    villager_phone TEXT NOT NULL,
    item_code TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('confirmed', 'refused', 'cancelled', 'arrived', 'no_show')),
    reason TEXT NOT NULL DEFAULT '',
    requested_at TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    updated_by TEXT,
    updated_at TEXT
);
CREATE UNIQUE INDEX appointments_seat ON appointments(slot_id, seat) WHERE seat IS NOT NULL;
CREATE UNIQUE INDEX appointments_villager ON appointments(slot_id, villager_name, villager_phone) WHERE seat IS NOT NULL;
CREATE INDEX appointments_day ON appointments(office, day, start);
CREATE TABLE appointment_requests (
    request_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    office TEXT NOT NULL,
    day TEXT NOT NULL,
    start TEXT NOT NULL,
    villager_name TEXT NOT NULL,
    villager_phone TEXT NOT NULL,
    item_code TEXT NOT NULL DEFAULT '',
    agent TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'refused', 'cancelled', 'arrived', 'no_show')),
    seat INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    requested_at TEXT NOT NULL,
    answered_at TEXT
);
CREATE INDEX appointment_requests_day ON appointment_requests(day, start);
"""

# 绩效考核 (hub): the admin's weights (every version kept) and each published month, frozen;
# a complaint's 属实 finding (counted against the office complained about)
PERFORMANCE = """
ALTER TABLE complaints ADD COLUMN upheld INTEGER;
CREATE TABLE performance_weights (
    version INTEGER PRIMARY KEY,
    weights TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at TEXT NOT NULL
);
-- One row per month and dimension: the primary key is what freezes a published month.
CREATE TABLE performance_months (
    month TEXT NOT NULL,
    dimension TEXT NOT NULL,
    weights TEXT NOT NULL,
    formula TEXT NOT NULL,
    rows TEXT NOT NULL,
    published_by TEXT NOT NULL,
    published_at TEXT NOT NULL,
    PRIMARY KEY (month, dimension)
);
"""

# 一件事一次办 / 证照联办 (seed 004 §7, §11): the cases of one thing, linked by its id. Each node
# notes how many steps its own catalog says a case waits for (``after_steps``): a later step is
# 接件 only once the earlier ones have their result.
THINGS = """
CREATE TABLE case_things (
    case_id TEXT PRIMARY KEY REFERENCES cases(case_id),
    thing_id TEXT NOT NULL,
    thing_code TEXT NOT NULL,
    thing_name TEXT NOT NULL,
    after_steps INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX case_things_by_thing ON case_things(thing_id);
"""

# The village's purge search (shared/services/retention.py) reads only closed, unpurged cases:
# the index holds only those, so storing a new case (every tier, and the hub's ingest above all)
# writes one index fewer. The status list is the retention query's, literally (a partial index
# is used only for a query whose WHERE names the same terms).
CLOSED_UNPURGED_INDEX = """
DROP INDEX IF EXISTS cases_unpurged_closed;
CREATE INDEX IF NOT EXISTS cases_closed_unpurged ON cases(origin, updated_at)
    WHERE purged_at IS NULL AND status IN ('CONCLUDED', 'TERMINATED', 'WITHDRAWN');
"""

# A case's events keyed by (case, event), not by the event id alone (issue 12, the hub's apply).
# The ids of a case's submit and 接件 events are hashes of the case id (casework.submit_event_id),
# so a unique index on the id alone took every new event at a random page of an index the size of
# the whole register: one page written to the WAL per event once the register outgrows the cache.
# Case ids grow with time, so the (case_id, event_id) index grows at its right edge, as the
# (case_id, at) one beside it does. An event belongs to one case and its id is unique by
# construction (a hash of its case's id, or a fresh time-ordered id), so the pair dedupes exactly
# what the id did; a repeat is still found by the id, now within its case. The rowid is copied:
# events of one instant keep their order (``ORDER BY at, rowid``). Dropping the table drops its
# index and triggers; both are made again as before.
CASE_EVENTS_BY_CASE = """
CREATE TABLE case_events_by_case (
    event_id TEXT NOT NULL,
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    at TEXT NOT NULL,
    node TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    detail TEXT,
    UNIQUE (case_id, event_id)
);
INSERT INTO case_events_by_case(rowid, event_id, case_id, at, node, actor, action, from_status, to_status, comment,
                                detail)
    SELECT rowid, event_id, case_id, at, node, actor, action, from_status, to_status, comment, detail FROM case_events;
DROP TABLE case_events;
ALTER TABLE case_events_by_case RENAME TO case_events;
CREATE INDEX case_events_case ON case_events(case_id, at);
""" + _CASE_FACTS_EVENT_TRIGGERS
