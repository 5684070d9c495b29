"""The village room (村便民服务室): the agent's offline intake and the results coming back."""

from flask import Flask

from shared.web import create_node_app
from shared.web.jobs import start_jobs
from village_node.db import database


def create_app(test_config: dict | None = None) -> Flask:
    """Create the village app for the node in ``LIANDONG_DATA_DIR`` (or ``test_config["DATA_DIR"]``)."""
    app = create_node_app(__name__, "village", test_config, database)
    from shared.web import cases, documents, feedback, intake
    from village_node import syncstatus

    app.register_blueprint(intake.bp)
    app.register_blueprint(cases.bp)
    app.register_blueprint(documents.bp)
    app.register_blueprint(syncstatus.bp)
    from shared.web import bundles as bundle_pages  # U盘 bundles
    app.register_blueprint(bundle_pages.bp)
    app.register_blueprint(feedback.bp)
    from shared.web import site_visits as site_visit_pages  # 现场核查 (history, list)
    app.register_blueprint(site_visit_pages.bp)
    start_jobs(app)
    return app
