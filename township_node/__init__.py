"""The township station (乡镇便民服务站): window intake, relay for its villages, delegated decisions."""

from flask import Flask

from shared.web import (
    appointments,
    bundles,
    cases,
    documents,
    feedback,
    fees,
    inquiries,
    intake,
    joint,
    site_visits,
    sync_api,
    things,
)
from shared.web.factory import create_node_app
from shared.web.jobs import start_jobs
from township_node import enrol_relay, relay_pages
from township_node.db import database
from township_node.relay_service import TownshipSync
from township_node.tier import TIER


def create_app(test_config: dict | None = None) -> Flask:
    """Create the township app for the node in ``LIANDONG_DATA_DIR`` (or ``test_config["DATA_DIR"]``)."""
    app = create_node_app(__name__, TIER, test_config, database)
    # After a queued chunk is followed, its round sends on what the station decided at once.
    app.extensions["liandong_sync"] = TownshipSync(
        app.extensions["liandong_node"], lambda: database.connect(app),
        after_follow=lambda: app.extensions.get("liandong_sync_kick", lambda: None)())
    for blueprint in (intake.bp, cases.bp, documents.bp, joint.bp, relay_pages.bp, bundles.bp, sync_api.bp,
                      enrol_relay.bp, feedback.bp, site_visits.bp, fees.bp, inquiries.bp,
                      appointments.bp, things.bp):
        app.register_blueprint(blueprint)
    start_jobs(app)
    return app
