"""The ordered list of schema migrations every node applies after its own first schema.

Each entry brings a database to the next ``PRAGMA user_version``; entries are only ever
appended (never edited or reordered once released), and a tier applies every one of them even
when it does not use a table, so all nodes share one numbering. The SQL of each is in
:mod:`shared.services.schema` (and :mod:`sync.schema` for the sync layer's tables).
"""

from shared.services import schema
from sync.schema import APPLY_QUEUE, BLOB_BYTES, FOLLOW_QUEUE, INBOX_BY_ORIGIN, INBOX_HELD, RELAY_GUARDS


def node_migrations(first: str) -> list[str]:
    """``first`` (the tier's own initial schema) followed by the shared migrations, in order."""
    return [
        first,
        schema.SUPERVISION,  # 2: 电子监察 alerts
        schema.DOCUMENTS,  # 3: signed 制式文书
        schema.FEEDBACK,  # 4: 好差评, 回访, 投诉
        schema.JOINT,  # 5: 联合审批 opinions, 审管互动 pushes
        "",  # 6: (none: statistics are computed)
        schema.PROJECTS,  # 7: 项目代办
        schema.LIST_INDEXES,  # 8: list-page indexes (10,000+ cases: pages by submitted_at without sorting)
        schema.DRAFTS,  # 9: the village's 暂存 drafts
        schema.CASE_FACTS,  # 10: per-case facts for statistics
        schema.DROP_REDUNDANT_INDEXES,  # 11: single-column indexes the composite ones cover
        APPLY_QUEUE,  # 12: the hub's accepted envelopes waiting to be applied
        schema.SESSIONS,  # 13: session epochs (server-side logout) and login throttling
        schema.GREEN_CHANNEL,  # 14: 重点项目 绿色通道, investment, case green mark
        schema.LICENCES,  # 15: 电子证照 held here, by holder, and their revocations
        schema.AUDIT_CHAIN,  # 16: the audit log hash-chained; no id reused (INSERT OR REPLACE)
        RELAY_GUARDS,  # 17: first envelope id per relayed (origin, seq); parked blobs per uploader
        schema.CASES_NOT_AT_HUB,  # 18: an acknowledgement touches only the cases not yet at the hub
        schema.PERSONAL_DATA_PURGE,  # 19: personal data purged at the village
        schema.FEES,  # 20: 规范收费 records
        schema.INQUIRIES,  # 21: 首问负责 and 咨询登记
        schema.APPOINTMENTS,  # 22: 预约 slots, bookings and requests
        schema.PERFORMANCE,  # 23: 绩效考核 weights and published months
        schema.THINGS,  # 24: 一件事一次办: the cases of one thing
        schema.CLOSED_UNPURGED_INDEX,  # 25: the purge index holds closed cases only (ingest writes one fewer)
        BLOB_BYTES,  # 26: small material files' bytes as rows (one transaction per batch of scans)
        INBOX_HELD,  # 27: when the relaying township took an envelope (its 接件's time at the hub)
        FOLLOW_QUEUE,  # 28: a township's custody still to follow in its own register (after its answer)
        schema.CASE_EVENTS_BY_CASE,  # 29: a case's events keyed by (case, event): the index grows at its edge
        INBOX_BY_ORIGIN,  # 30: the hub's inbox keyed by (origin, seq) alone, no random index on the id
    ]
