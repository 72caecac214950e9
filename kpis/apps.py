from __future__ import annotations

from django.apps import AppConfig


class KpisConfig(AppConfig):
    name = "kpis"
    verbose_name = "Network KPIs"
    default_auto_field = "django.db.models.BigAutoField"
