"""The township's database: origin (window intake), relay (custody) and issuer (decisions)."""

from shared.services.migrations import node_migrations
from shared.services.schema import COMMON
from shared.web.db import DatabaseOwner
from sync.schema import ISSUER, ORIGIN, RELAY

MIGRATIONS = node_migrations(COMMON + ORIGIN + RELAY + ISSUER)

database = DatabaseOwner(MIGRATIONS)
get_db = database.get_db
