"""The three tiers by name: the one place outside the tier packages that maps a name to one."""

from __future__ import annotations

from city_hub import create_app as hub_app
from city_hub.db import MIGRATIONS as HUB_MIGRATIONS
from city_hub.tier import TIER as HUB
from township_node import create_app as township_app
from township_node.db import MIGRATIONS as TOWNSHIP_MIGRATIONS
from township_node.tier import TIER as TOWNSHIP
from village_node import create_app as village_app
from village_node.db import MIGRATIONS as VILLAGE_MIGRATIONS
from village_node.tier import TIER as VILLAGE

TIERS = {"hub": HUB, "township": TOWNSHIP, "village": VILLAGE}
APP_FACTORIES = {"hub": hub_app, "township": township_app, "village": village_app}
MIGRATIONS = {"hub": HUB_MIGRATIONS, "township": TOWNSHIP_MIGRATIONS, "village": VILLAGE_MIGRATIONS}
