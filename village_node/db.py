"""The village room's database: its cases and its outbox."""

from shared.schema import COMMON, SUPERVISION
from shared.web.db import DatabaseOwner
from sync.schema import ORIGIN

MIGRATIONS = [COMMON + ORIGIN, SUPERVISION]

database = DatabaseOwner(MIGRATIONS)
get_db = database.get_db
