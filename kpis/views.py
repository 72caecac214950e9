"""The read-only API: the KPI list, the rows of one KPI, and the processing ledger."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import generics
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from kpis.filters import IntervalFilter
from kpis.models import IntervalLedger, KpiRow
from kpis.pagination import OptionalLimitOffsetPagination
from kpis.registry import KPIS, KpiDefinition, kpi_get
from kpis.serializers import ROW_SERIALIZERS, IntervalLedgerSerializer, KpiSerializer
from kpis.throttling import ThrottleBeforeAuthMixin


class KpiListView(ThrottleBeforeAuthMixin, APIView):
    """The KPIs this service computes."""

    def get(self, request: Request) -> Response:
        data = KpiSerializer([{"id": kpi.id, "name": kpi.name} for kpi in KPIS], many=True).data
        return Response(data)


class KpiRowsView(ThrottleBeforeAuthMixin, generics.ListAPIView):
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
        kpi = self.get_kpi()
        return kpi.model.objects.order_by(
            "interval_start_timestamp", "interval", f"-{kpi.value_field}", kpi.key_field
        )

    def get_serializer_class(self) -> Any:
        return ROW_SERIALIZERS[self.get_kpi().model]


class IntervalLedgerView(ThrottleBeforeAuthMixin, generics.ListAPIView):
    """What was processed per interval and hour, with completeness flags."""

    serializer_class = IntervalLedgerSerializer
    filterset_class = IntervalFilter
    pagination_class = OptionalLimitOffsetPagination
    queryset = IntervalLedger.objects.order_by("interval_start_timestamp", "interval")
