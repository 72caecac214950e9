from __future__ import annotations

from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from kpis.api.views import dashboard
from kpis.monitoring.views import MetricsView

urlpatterns = [
    path("", dashboard, name="dashboard"),
    # Browsers ask for /favicon.ico on every page that names no icon (the admin, the
    # browsable API): the dashboard's icon, instead of a 404 in each page's console.
    path("favicon.ico", RedirectView.as_view(url=static("kpis/favicon.svg")), name="favicon"),
    path("admin/", admin.site.urls),
    # Public documents: not throttled, so that fetching them never writes to the shared cache.
    path("api/schema/", SpectacularAPIView.as_view(throttle_classes=[]), name="schema"),
    # The split view serves its start-up script as a file, so no inline script is needed;
    # its page keeps one inline <style>, which the Content-Security-Policy allows here only.
    path(
        "api/docs/",
        csp_update({"style-src": [UNSAFE_INLINE]})(
            SpectacularSwaggerSplitView.as_view(url_name="schema", throttle_classes=[])
        ),
        name="swagger-ui",
    ),
    path("api/", include("kpis.api.urls")),
    path("api-auth/", include("rest_framework.urls")),
    # Prometheus scrapes /metrics (no trailing slash, as it expects by default).
    path("metrics", MetricsView.as_view(), name="metrics"),
]
