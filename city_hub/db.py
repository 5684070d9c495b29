"""The hub's database: one SQLite file, schema composed from the shared fragments."""

from shared import feedback, joint, oversight, projects
from shared.schema import COMMON, DOCUMENTS, SUPERVISION
from shared.web.db import DatabaseOwner
from sync.schema import HUB, ISSUER

MIGRATIONS = [COMMON + HUB + ISSUER, SUPERVISION, DOCUMENTS, feedback.SCHEMA, joint.SCHEMA, oversight.SCHEMA, projects.PROJECTS_SCHEMA]
# Page speed (indexes) and the village's 暂存 drafts: shared/perf_indexes.py, shared/drafts.py.
from shared import drafts, perf_indexes  # noqa: E402

MIGRATIONS += [perf_indexes.SCHEMA, drafts.SCHEMA]

# Stored per-case facts for the statistics page: shared/case_facts.py.
from shared import case_facts  # noqa: E402

MIGRATIONS += [case_facts.SCHEMA]

database = DatabaseOwner(MIGRATIONS)
get_db = database.get_db
