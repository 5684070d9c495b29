"""The village room's database: its cases and its outbox."""

from shared.migrations import node_migrations
from shared.schema import COMMON
from shared.web.db import DatabaseOwner
from sync.schema import ORIGIN

MIGRATIONS = node_migrations(COMMON + ORIGIN)

database = DatabaseOwner(MIGRATIONS)
get_db = database.get_db
