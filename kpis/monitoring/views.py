"""Endpoints for monitors: ``/api/health/`` (anonymous) and ``/metrics`` (Prometheus).

Health is in the OpenAPI schema; ``/metrics`` is not (its format is Prometheus', not JSON).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import Error as DatabaseLayerError
from django.http import HttpResponse
from django.utils import timezone
from django.utils.log import log_response
from drf_spectacular.utils import extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from kpis.api.schema import (
    HEALTH_OPERATION,
    HEALTH_RESPONSE_HEADERS,
    AnonymousSchema,
    health_responses,
)
from kpis.api.throttling import SlicedRateThrottle, ThrottleBeforeAuthMixin
from kpis.monitoring.metrics import metrics_exposition
from kpis.selectors import data_health


class HealthRateThrottle(SlicedRateThrottle):
    """Per client IP, with its own rate, so that monitors never eat the API's anonymous budget."""

    scope = "health"

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except DatabaseLayerError:
            # A throttle cache kept in the database must not turn "database unavailable"
            # into a 500: the monitor has to learn what is wrong.
            return True


class HealthView(APIView):
    """200 while the newest five-minute interval with accepted rows is recent enough, else 503."""

    authentication_classes: list[type[Any]] = []
    permission_classes = [AllowAny]
    throttle_classes = [HealthRateThrottle]
    renderer_classes = [JSONRenderer]

    schema = AnonymousSchema()

    @extend_schema(
        operation_id=HEALTH_OPERATION,
        summary="How fresh the data is",
        description=(
            "No credentials needed (any Authorization header is ignored). 200 while the newest "
            "five-minute interval with accepted rows ended at most KPI_HEALTH_MAX_LAG_SECONDS "
            "ago; 503 when it is older (stale), when no row was accepted yet (empty) or when "
            "the database cannot be reached."
        ),
        tags=["health"],
        parameters=HEALTH_RESPONSE_HEADERS,
        responses=health_responses(),
    )
    def get(self, request: Request) -> Response:
        health = data_health(
            now=timezone.now(), max_lag_seconds=settings.KPI_HEALTH_MAX_LAG_SECONDS
        )
        end = health.latest_interval_end
        body = {
            "status": health.status,
            "latest_interval_end": end.strftime("%Y-%m-%dT%H:%M:%SZ") if end else None,
            "lag_seconds": health.lag_seconds,
        }
        response = Response(body, status=200 if health.ok else 503)
        if not health.ok:
            # A documented answer, not a server error: Django would log every 503 as an
            # ERROR, and a monitor polling stale data would fill the log. It goes to
            # django.request at INFO instead; a database error is logged by data_health.
            log_response(
                "Health %s: %s",
                health.status,
                request.path,
                response=response,
                request=request,
                level="info",
            )
        return response


class _JsonErrors(BaseContentNegotiation):
    """Refusals are JSON whatever the scraper accepts; the metrics pick their own format."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type or "application/json"


class MetricsView(ThrottleBeforeAuthMixin, APIView):
    """Prometheus text format, with the API's credentials (a token or a session)."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = _JsonErrors

    @extend_schema(exclude=True)
    def get(self, request: Request) -> HttpResponse:
        body, content_type = metrics_exposition(request.headers.get("Accept", ""))
        return HttpResponse(body, content_type=content_type)
