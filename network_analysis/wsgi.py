"""WSGI entry point, e.g. ``gunicorn network_analysis.wsgi``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "network_analysis.settings")

application = get_wsgi_application()
