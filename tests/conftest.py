"""Shared fixtures: real networks of nodes in temporary folders (see ``tests/network.py``)."""

from __future__ import annotations

import pytest
from network import Network  # tests/ is on sys.path (pytest's default rootdir-less import mode)
from service import ServiceHub

from shared.services import accounts

# Hundreds of accounts are created and logged in across the suite: in-process nodes hash
# passwords with scrypt at a lower cost factor (the same algorithm; ~2 ms instead of ~100 ms).
# The production default, and the equal time of unknown users, are pinned at full cost by
# tests/test_accounts_sessions.py, which runs without this.
FULL_COST_MODULES = {"test_accounts_sessions"}


@pytest.fixture(autouse=True, scope="module")
def _cheaper_password_hashes(request):
    if request.module.__name__.rpartition(".")[2] in FULL_COST_MODULES:
        yield
        return
    saved = accounts.PASSWORD_METHOD
    accounts.PASSWORD_METHOD = "scrypt:1024:8:1"
    yield
    accounts.PASSWORD_METHOD = saved


@pytest.fixture(scope="module")
def build_network(tmp_path_factory):
    """A factory of networks for one test module; every server is stopped when the module ends."""
    built: list[Network] = []

    def build(villages: int = 1, township: bool = True) -> Network:
        net = Network.build(tmp_path_factory.mktemp("net"), villages=villages, township=township)
        built.append(net)
        return net

    yield build
    for net in built:
        net.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One real hub in-process, without a network (``tests/service.py``): for the deciding
    node's rules, which need no township or village."""
    hub = ServiceHub(tmp_path_factory.mktemp("service-hub"))
    yield hub
    hub.close()


@pytest.fixture
def restore_logging():
    """Undo a node's logging configuration (``liandong node serve`` in-process) after the test."""
    import logging

    names = ("", "liandong", "waitress", "apscheduler")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level) for n in names}
    yield
    for name, (handlers, level) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)


# Defaults for modules that need one small network (a module's own fixtures of the same names win).


@pytest.fixture(scope="module")
def net(build_network):
    """Hub, township and one village for this module."""
    return build_network(villages=1)


@pytest.fixture(scope="module")
def village(net):
    return net.village()


@pytest.fixture(scope="module")
def agent(village):
    """The API token of the village's 代办员."""
    return village.account("agent", "agent", village.node_id)
