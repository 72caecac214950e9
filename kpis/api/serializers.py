"""API representations of KPI rows, the processing ledger, and error bodies."""

from __future__ import annotations

from rest_framework import serializers

from kpis.models import CellUniqueUsers, IntervalLedger, KpiRow, ServiceTrafficVolume
from kpis.selectors import HEALTH_STATUSES

_ROW_FIELDS = ["id", "interval_start_timestamp", "interval_end_timestamp", "interval"]


class KpiSerializer(serializers.Serializer[object]):
    id = serializers.IntegerField()
    name = serializers.CharField()


class ServiceTrafficVolumeSerializer(serializers.ModelSerializer[ServiceTrafficVolume]):
    class Meta:
        model = ServiceTrafficVolume
        fields = [*_ROW_FIELDS, "service_id", "total_bytes"]
        read_only_fields = fields


class CellUniqueUsersSerializer(serializers.ModelSerializer[CellUniqueUsers]):
    class Meta:
        model = CellUniqueUsers
        fields = [*_ROW_FIELDS, "cell_id", "number_of_unique_users"]
        read_only_fields = fields


ROW_SERIALIZERS: dict[type[KpiRow], type[serializers.ModelSerializer]] = {
    ServiceTrafficVolume: ServiceTrafficVolumeSerializer,
    CellUniqueUsers: CellUniqueUsersSerializer,
}


class IntervalLedgerSerializer(serializers.ModelSerializer[IntervalLedger]):
    complete = serializers.BooleanField(
        source="is_complete",
        read_only=True,
        help_text="Every file was read; for an hour, all twelve intervals are processed too.",
    )
    restatable = serializers.BooleanField(
        read_only=True,
        help_text=(
            "What a late file for this interval would get now: true, it is merged; false, "
            "the hour is final (it ended more than KPI_RESTATE_DAYS ago) and a new file is "
            "too late, counted nowhere until the hour is restated from the raw files."
        ),
    )
    rejects = serializers.DictField(
        child=serializers.IntegerField(min_value=0),
        read_only=True,
        help_text="Rejected rows counted by reason.",
    )

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
            "files_too_late",
            "restatable",
            "rows_accepted",
            "rows_rejected",
            "rejects",
            "needs_rollup",
            "processed_at",
        ]
        read_only_fields = fields


class DetailErrorSerializer(serializers.Serializer[object]):
    """For the schema: the body of a 401, 404, 405 or 429."""

    detail = serializers.CharField(help_text="What went wrong, for a person to read.")


class HealthSerializer(serializers.Serializer[object]):
    """For the schema: the body of ``/api/health/``, a 200 when ``ok`` and a 503 otherwise."""

    status = serializers.ChoiceField(
        choices=HEALTH_STATUSES,
        help_text='"ok" is a 200; "stale", "empty" and "database unavailable" are a 503.',
    )
    latest_interval_end = serializers.DateTimeField(
        allow_null=True,
        help_text=(
            "The end of the newest five-minute interval with accepted rows (an interval whose "
            "files all failed does not count); null when there is none."
        ),
    )
    lag_seconds = serializers.IntegerField(
        allow_null=True, help_text="Seconds from that end to now; null when there is none."
    )
