"""The county hub (市(县)政务服务中心): ingest, routing, approvals, the node registry.

Served in production by gunicorn: ``gunicorn -c deploy/gunicorn.conf.py 'city_hub:create_app()'``,
with its scheduled rules in one ``liandong hub jobs`` process (deploy/).
"""

from flask import Flask

from city_hub.db import database
from shared.web import create_node_app
from shared.web.jobs import start_jobs


def create_app(test_config: dict | None = None) -> Flask:
    """Create the hub app for the hub in ``LIANDONG_DATA_DIR`` (or ``test_config["DATA_DIR"]``)."""
    app = create_node_app(__name__, "hub", test_config, database)
    from city_hub import admin, enrolment
    from city_hub.ingest import notify_origin
    from city_hub.sync_service import HubSync
    from shared.web import cases, documents, feedback
    from shared.web import sync_api as api

    node = app.extensions["liandong_node"]
    app.extensions["liandong_sync"] = HubSync(node, lambda: database.connect(app))
    node.emit = lambda conn, row, event, decision: notify_origin(conn, node, row, event, decision)
    app.register_blueprint(cases.bp)
    app.register_blueprint(documents.bp)
    from shared.web import joint as joint_pages  # 联办意见, 审管认领
    app.register_blueprint(joint_pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(enrolment.bp)
    app.register_blueprint(admin.bp)
    from city_hub import oversight_pages as oversight  # 电子监察, 统计 (supervisor, admin)
    app.register_blueprint(oversight.bp)
    app.register_blueprint(feedback.bp)
    from city_hub import project_pages as project_pages  # 项目代办
    from shared.web import site_visits as site_visit_pages  # 现场核查
    app.register_blueprint(project_pages.bp)
    app.register_blueprint(site_visit_pages.bp)
    start_jobs(app)
    return app
