"""The township station (乡镇便民服务站): window intake, relay for its villages, delegated decisions."""

from flask import Flask

from shared.web import create_node_app
from shared.web.jobs import start_jobs
from township_node.db import database


def create_app(test_config: dict | None = None) -> Flask:
    """Create the township app for the node in ``LIANDONG_DATA_DIR`` (or ``test_config["DATA_DIR"]``)."""
    app = create_node_app(__name__, "township", test_config, database)
    from shared.web import cases, documents, feedback, intake
    from shared.web import sync_api as api
    from township_node import enrol_relay, relay_pages
    from township_node.relay_service import TownshipSync

    service = TownshipSync(app.extensions["liandong_node"])
    app.extensions["liandong_sync"] = service
    app.extensions["liandong_node"].emit = service.emit
    app.register_blueprint(intake.bp)
    app.register_blueprint(cases.bp)
    app.register_blueprint(documents.bp)
    from shared.web import joint as joint_pages  # 联办意见, 审管认领
    app.register_blueprint(joint_pages.bp)
    app.register_blueprint(relay_pages.bp)
    from shared.web import bundles as bundle_pages  # U盘 bundles
    app.register_blueprint(bundle_pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(enrol_relay.bp)
    app.register_blueprint(feedback.bp)
    from shared.web import site_visits as site_visit_pages  # 现场核查
    app.register_blueprint(site_visit_pages.bp)
    start_jobs(app)
    return app
