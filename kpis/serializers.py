"""API representations of KPI rows and the processing ledger."""

from __future__ import annotations

from rest_framework import serializers

from kpis.models import CellUniqueUsers, IntervalLedger, KpiRow, ServiceTrafficVolume

_ROW_FIELDS = ["id", "interval_start_timestamp", "interval_end_timestamp", "interval"]


class KpiSerializer(serializers.Serializer[object]):
    id = serializers.IntegerField()
    name = serializers.CharField()


class ServiceTrafficVolumeSerializer(serializers.ModelSerializer[ServiceTrafficVolume]):
    class Meta:
        model = ServiceTrafficVolume
        fields = [*_ROW_FIELDS, "service_id", "total_bytes"]


class CellUniqueUsersSerializer(serializers.ModelSerializer[CellUniqueUsers]):
    class Meta:
        model = CellUniqueUsers
        fields = [*_ROW_FIELDS, "cell_id", "number_of_unique_users"]


ROW_SERIALIZERS: dict[type[KpiRow], type[serializers.ModelSerializer]] = {
    ServiceTrafficVolume: ServiceTrafficVolumeSerializer,
    CellUniqueUsers: CellUniqueUsersSerializer,
}


class IntervalLedgerSerializer(serializers.ModelSerializer[IntervalLedger]):
    complete = serializers.BooleanField(source="is_complete", read_only=True)

    class Meta:
        model = IntervalLedger
        fields = [
            *_ROW_FIELDS,
            "revision",
            "complete",
            "intervals_processed",
            "files_counted",
            "files_failed",
            "files_duplicate",
            "files_missing",
            "rows_accepted",
            "rows_rejected",
            "rejects",
            "needs_rollup",
            "processed_at",
        ]
