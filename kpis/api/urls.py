from __future__ import annotations

from django.urls import path

from kpis.api import views
from kpis.monitoring import views as monitoring
from kpis.registry import KPIS

urlpatterns = [
    # /api/KPIs/
    path("KPIs/", views.KpiListView.as_view(), name="kpi-list"),
    # /api/KPIs/1/, /api/KPIs/2/ ; one documented path per KPI, with its own row type
    *(
        path(f"KPIs/{kpi.id}/", views.KpiRowsView.as_view(kpi=kpi), name=f"kpi-{kpi.id}-rows")
        for kpi in KPIS
    ),
    # /api/KPIs/<id>/ ; any text is accepted so that an unknown id gets a JSON 404
    path("KPIs/<str:kpi_id>/", views.KpiRowsView.as_view(), name="kpi-rows"),
    # /api/intervals/
    path("intervals/", views.IntervalLedgerView.as_view(), name="interval-ledger"),
    # /api/health/ ; anonymous, for load balancers and uptime monitors
    path("health/", monitoring.HealthView.as_view(), name="health"),
]
