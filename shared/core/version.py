"""The one place the release version is written.

``setup.cfg`` reads it (``version = attr: shared.core.version.__version__``); the CLI's
``--version``, ``/healthz``, page footers and ``docs/openapi.yaml`` (checked by a test) follow it.
"""

__version__ = "0.1.0"
