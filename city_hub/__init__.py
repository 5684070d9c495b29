"""The county hub (市(县)政务服务中心): ingest, routing, approvals, the node registry.

Served in production by gunicorn: ``gunicorn -c deploy/gunicorn.conf.py 'city_hub:create_app()'``,
with its scheduled rules in one ``liandong hub jobs`` process (deploy/).
"""

from flask import Flask

from city_hub import (
    admin,
    enrolment,
    licence_pages,  # 电子证照
    performance_pages,  # 绩效考核
    project_pages,  # 项目代办
    regulation_pages,  # 审管认领
)
from city_hub.db import database
from city_hub.oversight import pages as oversight_pages  # 电子监察, 统计 (supervisor, admin)
from city_hub.sync_service import HubSync
from city_hub.tier import TIER
from shared.web import appointments, cases, documents, feedback, fees, inquiries, joint, site_visits, sync_api
from shared.web.factory import create_node_app
from shared.web.jobs import start_jobs


def create_app(test_config: dict | None = None) -> Flask:
    """Create the hub app for the hub in ``LIANDONG_DATA_DIR`` (or ``test_config["DATA_DIR"]``)."""
    app = create_node_app(__name__, TIER, test_config, database)
    app.extensions["liandong_sync"] = HubSync(app.extensions["liandong_node"], lambda: database.connect(app))
    for blueprint in (cases.bp, documents.bp, joint.bp, sync_api.bp, enrolment.bp, admin.bp, oversight_pages.bp,
                      feedback.bp, project_pages.bp, site_visits.bp, regulation_pages.bp, licence_pages.bp, fees.bp,
                      inquiries.bp, appointments.bp, performance_pages.bp):
        app.register_blueprint(blueprint)
    start_jobs(app)
    return app
