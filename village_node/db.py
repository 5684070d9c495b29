"""The village room's database: its cases and its outbox."""

from shared import feedback, joint, oversight, projects
from shared.schema import COMMON, DOCUMENTS, SUPERVISION
from shared.web.db import DatabaseOwner
from sync.schema import ORIGIN

MIGRATIONS = [COMMON + ORIGIN, SUPERVISION, DOCUMENTS, feedback.SCHEMA, joint.SCHEMA, oversight.SCHEMA, projects.PROJECTS_SCHEMA]

database = DatabaseOwner(MIGRATIONS)
get_db = database.get_db
