"""The read-only API (KPI list, KPI rows, processing ledger) and the dashboard page."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Max, Min, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics
from rest_framework.exceptions import NotFound
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from kpis.filters import IntervalFilter
from kpis.listing import ValuesListMixin
from kpis.models import IntervalLedger, IntervalType, KpiRow, ServiceTrafficVolume
from kpis.pagination import OptionalLimitOffsetPagination
from kpis.registry import KPIS, KpiDefinition, kpi_get
from kpis.renderers import CsvRenderer
from kpis.serializers import (
    ROW_SERIALIZERS,
    DetailErrorSerializer,
    IntervalLedgerSerializer,
    KpiSerializer,
    kpi_row_schema_serializer,
)
from kpis.throttling import ThrottleBeforeAuthMixin

_LIST_PARAMETERS = [
    "interval_start_timestamp__gte",
    "interval_end_timestamp__lte",
    "interval",
    "limit",
    "offset",
]


def _parameter_errors_schema(names: list[str]) -> dict[str, Any]:
    """A 400 body: each key is a rejected query parameter, each value says why."""
    return {
        "type": "object",
        "properties": {name: {"type": "array", "items": {"type": "string"}} for name in names},
        "additionalProperties": False,
        "minProperties": 1,
    }


def _detail(description: str) -> OpenApiResponse:
    return OpenApiResponse(DetailErrorSerializer, description=description)


_COMMON_ERRORS = {
    401: _detail("No valid token or session (unless KPI_API_PUBLIC is on)."),
    405: _detail("Any method other than GET, HEAD or OPTIONS."),
    429: _detail("Too many requests; retry after the Retry-After header's seconds."),
}
_FORMAT_PARAMETER = OpenApiParameter(
    "format",
    OpenApiTypes.STR,
    OpenApiParameter.QUERY,
    enum=["json", "csv"],
    description="json (default) or csv: the same rows, columns and order as a CSV file.",
)
_CSV_RESPONSE = OpenApiResponse(
    OpenApiTypes.STR,
    description="With format=csv: a header row of the JSON field names, then one line per row.",
)
_LIST_ERRORS = {
    (400, "application/json"): OpenApiResponse(
        _parameter_errors_schema(_LIST_PARAMETERS),
        description="A malformed query parameter; the body names it.",
    ),
    **{(code, "application/json"): response for code, response in _COMMON_ERRORS.items()},
}


class _CsvExportMixin:
    """Adds ``?format=csv``; errors stay JSON so that a client can always read them."""

    renderer_classes: Sequence[type[BaseRenderer]] = [
        *cast("list[type[BaseRenderer]]", api_settings.DEFAULT_RENDERER_CLASSES),
        CsvRenderer,
    ]

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        if response.status_code >= 400 and isinstance(
            getattr(request, "accepted_renderer", None), CsvRenderer
        ):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


class KpiListView(ThrottleBeforeAuthMixin, APIView):
    """The KPIs this service computes."""

    @extend_schema(
        operation_id="kpis_list",
        summary="List the KPIs",
        responses={200: KpiSerializer(many=True), **_COMMON_ERRORS},
    )
    def get(self, request: Request) -> Response:
        data = KpiSerializer([{"id": kpi.id, "name": kpi.name} for kpi in KPIS], many=True).data
        return Response(data)


class KpiRowsView(ThrottleBeforeAuthMixin, _CsvExportMixin, ValuesListMixin, generics.ListAPIView):
    """The rows of one KPI, ordered by time, interval type, then rank."""

    filterset_class = IntervalFilter
    pagination_class = OptionalLimitOffsetPagination

    def get_kpi(self) -> KpiDefinition:
        raw = str(self.kwargs["kpi_id"])
        kpi = kpi_get(int(raw)) if raw.isdigit() else None
        if kpi is None:
            raise NotFound(f"No KPI with id {raw!r}; GET /api/KPIs/ lists them.")
        return kpi

    def get_queryset(self) -> QuerySet[KpiRow]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no kpi_id
            return ServiceTrafficVolume.objects.none()
        kpi = self.get_kpi()
        return kpi.model.objects.order_by(
            "interval_start_timestamp", "interval", f"-{kpi.value_field}", kpi.key_field
        )

    def get_serializer_class(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return ROW_SERIALIZERS[ServiceTrafficVolume]
        return ROW_SERIALIZERS[self.get_kpi().model]

    @extend_schema(
        operation_id="kpi_rows_list",
        summary="Rows of one KPI",
        description=(
            "KPI 1 rows carry service_id and total_bytes, KPI 2 rows cell_id and "
            "number_of_unique_users. Ordered by interval_start_timestamp, interval, value "
            "descending, then key ascending. Empty filter values are ignored. Without limit "
            "the body is the plain list; with limit it is the page envelope."
        ),
        parameters=[
            OpenApiParameter(
                "kpi_id",
                OpenApiTypes.INT,
                OpenApiParameter.PATH,
                enum=[kpi.id for kpi in KPIS],
                description=", ".join(f"{kpi.id} = {kpi.name}" for kpi in KPIS),
            ),
            _FORMAT_PARAMETER,
        ],
        responses={
            (200, "application/json"): kpi_row_schema_serializer(),
            (200, "text/csv"): _CSV_RESPONSE,
            **_LIST_ERRORS,
            (404, "application/json"): _detail("No KPI with this id."),
        },
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class IntervalLedgerView(ThrottleBeforeAuthMixin, _CsvExportMixin, generics.ListAPIView):
    """What was processed per interval and hour, with completeness flags."""

    serializer_class = IntervalLedgerSerializer
    filterset_class = IntervalFilter
    pagination_class = OptionalLimitOffsetPagination
    queryset = IntervalLedger.objects.order_by("interval_start_timestamp", "interval")

    @extend_schema(
        operation_id="intervals_list",
        summary="The processing ledger",
        description="One entry per processed five-minute interval and per hour, oldest first.",
        parameters=[_FORMAT_PARAMETER],
        responses={
            (200, "application/json"): IntervalLedgerSerializer(many=True),
            (200, "text/csv"): _CSV_RESPONSE,
            **_LIST_ERRORS,
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
