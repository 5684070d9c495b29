"""The village room (村便民服务室): the agent's offline intake and the results coming back."""

from flask import Flask

from shared.web import (
    appointments,
    bundles,
    cases,
    documents,
    feedback,
    inquiries,
    intake,
    site_visits,
    things,
)
from shared.web.factory import create_node_app
from shared.web.jobs import start_jobs
from village_node import syncstatus
from village_node.db import database
from village_node.tier import TIER


def create_app(test_config: dict | None = None) -> Flask:
    """Create the village app for the node in ``LIANDONG_DATA_DIR`` (or ``test_config["DATA_DIR"]``)."""
    app = create_node_app(__name__, TIER, test_config, database)
    for blueprint in (intake.bp, cases.bp, documents.bp, syncstatus.bp, bundles.bp, feedback.bp, site_visits.bp, inquiries.bp,
                      appointments.bp, things.bp):
        app.register_blueprint(blueprint)
    start_jobs(app)
    return app
