"""The Flask pieces every node uses: the app factory (:mod:`shared.web.factory`), the database
owner, authentication, the one error shape, the sync HTTP endpoints, and the feature blueprints
the tiers share. Each tier package keeps its own ``create_app(test_config=None)``.
"""
