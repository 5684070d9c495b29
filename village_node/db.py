"""The village room's database: its cases and its outbox."""

from shared import feedback, joint, oversight
from shared.schema import COMMON, DOCUMENTS, SUPERVISION
from shared.web.db import DatabaseOwner
from sync.schema import ORIGIN

MIGRATIONS = [COMMON + ORIGIN, SUPERVISION, DOCUMENTS, feedback.SCHEMA, joint.SCHEMA, oversight.SCHEMA]

database = DatabaseOwner(MIGRATIONS)
get_db = database.get_db
