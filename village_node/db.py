"""The village room's database: its cases and its outbox."""

from shared.services.migrations import node_migrations
from shared.services.schema import COMMON
from shared.web.db import DatabaseOwner
from sync.schema import ORIGIN

MIGRATIONS = node_migrations(COMMON + ORIGIN)

database = DatabaseOwner(MIGRATIONS)
get_db = database.get_db
