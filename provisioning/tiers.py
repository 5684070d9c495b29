"""The three tiers by name: the one place outside the tier packages that maps a name to one.

Each tier's package is imported the first time something asks for that tier, not with this
module: a village's ``liandong node serve`` then never loads the hub's or the township's code
(docs/performance.md, "The village process").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping


def _hub() -> tuple:
    import city_hub  # deferred: only where a hub is opened
    from city_hub.db import MIGRATIONS  # deferred: only where a hub is opened
    from city_hub.tier import TIER  # deferred: only where a hub is opened

    return TIER, city_hub.create_app, MIGRATIONS


def _township() -> tuple:
    import township_node  # deferred: only where a township is opened
    from township_node.db import MIGRATIONS  # deferred: only where a township is opened
    from township_node.tier import TIER  # deferred: only where a township is opened

    return TIER, township_node.create_app, MIGRATIONS


def _village() -> tuple:
    import village_node  # deferred: only where a village is opened
    from village_node.db import MIGRATIONS  # deferred: only where a village is opened
    from village_node.tier import TIER  # deferred: only where a village is opened

    return TIER, village_node.create_app, MIGRATIONS


_LOADERS: dict[str, Callable[[], tuple]] = {"hub": _hub, "township": _township, "village": _village}


class _ByTier(Mapping):
    """``{tier name: one of what its loader returns}``, each tier imported when first read."""

    def __init__(self, index: int):
        self._index = index

    def __getitem__(self, tier: str):
        return _LOADERS[tier]()[self._index]  # KeyError for an unknown tier, as a dict would

    def __iter__(self) -> Iterator[str]:
        return iter(_LOADERS)

    def __len__(self) -> int:
        return len(_LOADERS)


TIERS: Mapping = _ByTier(0)
APP_FACTORIES: Mapping = _ByTier(1)
MIGRATIONS: Mapping = _ByTier(2)
