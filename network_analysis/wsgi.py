"""WSGI entry point, e.g. ``gunicorn network_analysis.wsgi``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from network_analysis.env import exit_on_setting_error

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "network_analysis.settings")

# A bad setting: its one line, and gunicorn's "worker failed to boot" status (3), on which
# gunicorn stops instead of starting the worker again and again.
with exit_on_setting_error(exit_status=3):
    application = get_wsgi_application()
