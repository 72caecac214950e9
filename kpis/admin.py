"""Read-only admin for KPI rows and the processing ledger, fit for large tables."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from kpis.models import (
    CellUniqueUsers,
    InputFileRecord,
    IntervalLedger,
    LedgerQuerySet,
    ServiceTrafficVolume,
    UpdateRun,
)
from kpis.selectors import ledger_entries


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows come from the pipeline only; the admin shows them."""

    # COUNT(*) on a table of years of rows is slow; skip the full count.
    show_full_result_count = False
    list_per_page = 100

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


_TIME_FILTERS = ("interval", ("interval_start_timestamp", admin.DateFieldListFilter))


@admin.register(ServiceTrafficVolume)
class ServiceTrafficVolumeAdmin(ReadOnlyAdmin):
    list_display = (
        "interval_start_timestamp",
        "interval_end_timestamp",
        "interval",
        "service_id",
        "total_bytes",
    )
    list_filter = _TIME_FILTERS
    ordering = ("-interval_start_timestamp", "interval", "-total_bytes")
    search_fields = ("=service_id",)


@admin.register(CellUniqueUsers)
class CellUniqueUsersAdmin(ReadOnlyAdmin):
    list_display = (
        "interval_start_timestamp",
        "interval_end_timestamp",
        "interval",
        "cell_id",
        "number_of_unique_users",
    )
    list_filter = _TIME_FILTERS
    ordering = ("-interval_start_timestamp", "interval", "-number_of_unique_users")
    search_fields = ("=cell_id",)


@admin.register(IntervalLedger)
class IntervalLedgerAdmin(ReadOnlyAdmin):
    list_display = (
        "interval_start_timestamp",
        "interval",
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
        "processed_at",
    )
    list_filter = (*_TIME_FILTERS, "needs_rollup", "states_kept")
    ordering = ("-interval_start_timestamp", "interval")

    @admin.display(boolean=True)
    def complete(self, obj: IntervalLedger) -> bool:
        return obj.is_complete

    def get_queryset(self, request: HttpRequest) -> LedgerQuerySet:
        entries = cast(LedgerQuerySet, super().get_queryset(request))
        window = timedelta(days=settings.KPI_RESTATE_DAYS)
        return ledger_entries(now=timezone.now(), window=window, entries=entries)

    @admin.display(boolean=True, description="restatable", ordering="restatable")
    def restatable(self, obj: IntervalLedger) -> bool:
        """A late file for the interval would be merged now (see KPI_RESTATE_DAYS)."""
        return bool(obj.restatable)  # type: ignore[attr-defined]


@admin.register(InputFileRecord)
class InputFileRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "interval_start_timestamp",
        "status",
        "rows_accepted",
        "rows_rejected",
        "interval_revision",
        "processed_at",
        "missing_since",
        "error",
    )
    list_filter = ("status", ("interval_start_timestamp", admin.DateFieldListFilter))
    search_fields = ("name",)
    ordering = ("-interval_start_timestamp", "name")


@admin.register(UpdateRun)
class UpdateRunAdmin(ReadOnlyAdmin):
    list_display = (
        "finished_at",
        "exit_status",
        "duration_seconds",
        "intervals_processed",
        "files_read",
        "files_failed",
        "rows_accepted",
        "rows_rejected",
    )
    list_filter = ("exit_status",)
