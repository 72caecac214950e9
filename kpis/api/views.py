"""The read-only API (KPI list, KPI rows, processing ledger) and the dashboard page."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Max, Min, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from kpis.api.filters import IntervalFilter
from kpis.api.listing import ValuesListMixin
from kpis.api.negotiation import FormatParameterNegotiation
from kpis.api.pagination import OptionalLimitOffsetPagination
from kpis.api.renderers import CsvRenderer
from kpis.api.schema import (
    CSV_RESPONSE,
    FILTER_PARAMETERS,
    FORMAT_UNDOCUMENTED,
    RESPONSE_HEADERS,
    KpiRowsSchema,
    error_responses,
)
from kpis.api.serializers import ROW_SERIALIZERS, IntervalLedgerSerializer, KpiSerializer
from kpis.api.throttling import ThrottleBeforeAuthMixin
from kpis.models import IntervalLedger, IntervalType, KpiRow, ServiceTrafficVolume
from kpis.registry import KPIS, KpiDefinition, kpi_get
from kpis.selectors import ledger_entries

_CSV_NOTE = (
    " For CSV send Accept: text/csv (or, from a browser or curl, add format=csv); a paged CSV "
    "carries the total in X-Total-Count and the next and previous pages in Link."
)


class _CsvExportMixin:
    """CSV for ``Accept: text/csv`` or ``?format=csv``; errors stay JSON for any client."""

    renderer_classes: Sequence[type[BaseRenderer]] = [
        *cast("list[type[BaseRenderer]]", api_settings.DEFAULT_RENDERER_CLASSES),
        CsvRenderer,
    ]
    content_negotiation_class: type[BaseContentNegotiation] = FormatParameterNegotiation

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        if isinstance(getattr(request, "accepted_renderer", None), CsvRenderer):
            if response.status_code >= 400:
                request.accepted_renderer = JSONRenderer()
                request.accepted_media_type = JSONRenderer.media_type
            elif (paginator := getattr(self, "paginator", None)) is not None:
                # The JSON page carries count and links in its body; CSV has only headers.
                for header, value in paginator.get_page_headers().items():
                    response[header] = value
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


class KpiListView(ThrottleBeforeAuthMixin, _CsvExportMixin, APIView):
    """The KPIs this service computes."""

    @extend_schema(
        operation_id="kpis_list",
        summary="List the KPIs",
        description=(
            "Each KPI's rows are at /api/KPIs/<id>/; an unknown id there gives a JSON 404."
            + _CSV_NOTE
        ),
        tags=["kpis"],
        parameters=[FORMAT_UNDOCUMENTED, *RESPONSE_HEADERS],
        responses={
            (200, "application/json"): OpenApiResponse(KpiSerializer(many=True)),
            (200, "text/csv"): CSV_RESPONSE,
            **error_responses(paged=False),
        },
    )
    def get(self, request: Request) -> Response:
        data = KpiSerializer([{"id": kpi.id, "name": kpi.name} for kpi in KPIS], many=True).data
        return Response(data)


class KpiRowsView(ThrottleBeforeAuthMixin, _CsvExportMixin, ValuesListMixin, generics.ListAPIView):
    """The rows of one KPI, ordered by time, interval type, then rank."""

    filterset_class = IntervalFilter
    pagination_class = OptionalLimitOffsetPagination
    schema = KpiRowsSchema()
    # Set per URL for the documented /api/KPIs/<id>/ paths; None on the catch-all one.
    kpi: KpiDefinition | None = None

    def get_kpi(self) -> KpiDefinition:
        if self.kpi is not None:
            return self.kpi
        raw = str(self.kwargs["kpi_id"])
        kpi = kpi_get(int(raw)) if raw.isdigit() else None
        if kpi is None:
            raise NotFound(f"No KPI with id {raw!r}; GET /api/KPIs/ lists them.")
        return kpi

    def get_queryset(self) -> QuerySet[KpiRow]:
        if self.kpi is None and getattr(self, "swagger_fake_view", False):
            return ServiceTrafficVolume.objects.none()
        kpi = self.get_kpi()
        return kpi.model.objects.order_by(
            "interval_start_timestamp", "interval", f"-{kpi.value_field}", kpi.key_field
        )

    def get_serializer_class(self) -> Any:
        if self.kpi is None and getattr(self, "swagger_fake_view", False):
            return ROW_SERIALIZERS[ServiceTrafficVolume]
        return ROW_SERIALIZERS[self.get_kpi().model]

    @extend_schema(
        description=(
            "Ordered by interval_start_timestamp, interval, value descending, then key "
            "ascending. Without limit the body is the plain list; with limit it is the page "
            "envelope." + _CSV_NOTE
        ),
        parameters=[*FILTER_PARAMETERS, FORMAT_UNDOCUMENTED, *RESPONSE_HEADERS],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class IntervalLedgerView(ThrottleBeforeAuthMixin, _CsvExportMixin, generics.ListAPIView):
    """What was processed per interval and hour, with completeness flags."""

    serializer_class = IntervalLedgerSerializer
    filterset_class = IntervalFilter
    pagination_class = OptionalLimitOffsetPagination

    def get_queryset(self) -> QuerySet[IntervalLedger]:
        window = timedelta(days=settings.KPI_RESTATE_DAYS)
        entries = ledger_entries(now=timezone.now(), window=window)
        return entries.order_by("interval_start_timestamp", "interval")

    @extend_schema(
        operation_id="intervals_list",
        summary="The processing ledger",
        description=(
            "One entry per processed five-minute interval and per hour, oldest first." + _CSV_NOTE
        ),
        tags=["intervals"],
        parameters=[*FILTER_PARAMETERS, FORMAT_UNDOCUMENTED, *RESPONSE_HEADERS],
        responses={
            (200, "application/json"): OpenApiResponse(IntervalLedgerSerializer(many=True)),
            (200, "text/csv"): CSV_RESPONSE,
            **error_responses(paged=True),
        },
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


# Chart titles for the dashboard; a KPI without one is titled by its name.
_CHART_TITLES = {
    "ServiceTrafficVolume": "Total bytes of the top services",
    "CellUniqueUsers": "Unique users of the top cells",
}


def _iso(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """The charts page; its script reads the API with the visitor's session."""
    span = IntervalLedger.objects.filter(interval=IntervalType.FIVE_MINUTES).aggregate(
        start=Min("interval_start_timestamp"), end=Max("interval_end_timestamp")
    )
    kpis = [
        {
            "id": kpi.id,
            "name": kpi.name,
            "title": _CHART_TITLES.get(kpi.name, kpi.name),
            "key": kpi.key_field,
            "value": kpi.value_field,
            "url": reverse("kpi-rows", kwargs={"kpi_id": kpi.id}),
        }
        for kpi in KPIS
    ]
    config = {
        "kpis": kpis,
        "intervalsUrl": reverse("interval-ledger"),
        "earliestStart": _iso(span["start"]),
        "latestEnd": _iso(span["end"]),
    }
    return render(
        request,
        "kpis/dashboard.html",
        {"kpis": kpis, "top_n": settings.KPI_TOP_N, "config": config},
    )
