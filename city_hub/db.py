"""The hub's database: one SQLite file, schema composed from the shared fragments."""

from shared.services.migrations import node_migrations
from shared.services.schema import COMMON
from shared.web.db import DatabaseOwner
from sync.schema import HUB, ISSUER

MIGRATIONS = node_migrations(COMMON + HUB + ISSUER)

database = DatabaseOwner(MIGRATIONS)
get_db = database.get_db
