"""The ordered list of schema migrations every node applies after its own first schema.

Each entry brings a database to the next ``PRAGMA user_version``; entries are only ever
appended (never edited or reordered once released), and a tier applies every one of them even
when it does not use a table, so all nodes share one numbering.
"""

from shared import accounts, case_facts, drafts, feedback, joint, oversight, perf_indexes, projects
from shared.schema import DOCUMENTS, SUPERVISION
from sync.schema import APPLY_QUEUE


def node_migrations(first: str) -> list[str]:
    """``first`` (the tier's own initial schema) followed by the shared migrations, in order."""
    return [
        first,
        SUPERVISION,  # 2: 电子监察 alerts
        DOCUMENTS,  # 3: signed 制式文书
        feedback.SCHEMA,  # 4: 好差评, 回访, 投诉
        joint.SCHEMA,  # 5: 联合审批 opinions, 审管互动 pushes
        oversight.SCHEMA,  # 6: (none: statistics are computed)
        projects.PROJECTS_SCHEMA,  # 7: 项目代办
        perf_indexes.SCHEMA,  # 8: list-page indexes
        drafts.SCHEMA,  # 9: the village's 暂存 drafts
        case_facts.SCHEMA,  # 10: per-case facts for statistics
        perf_indexes.DROP_REDUNDANT,  # 11: single-column indexes the composite ones cover
        APPLY_QUEUE,  # 12: the hub's accepted envelopes waiting to be applied
        accounts.SESSION_SCHEMA,  # 13: session epochs (server-side logout) and login throttling
    ]
