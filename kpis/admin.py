"""Read-only admin for KPI rows and the processing ledger, fit for large tables."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString

from kpis.models import (
    CellUniqueUsers,
    InputFileRecord,
    IntervalLedger,
    LedgerQuerySet,
    ServiceTrafficVolume,
    UpdateRun,
)
from kpis.selectors import ledger_entries

# The sidebar repeats the index page's list of models and takes 300 px from every list,
# which the wide ledger and file-record tables need.
admin.site.enable_nav_sidebar = False


def grouped(field: str, description: str | None = None) -> Callable[[Any], str]:
    """A list column showing a count of ``field`` with thousands separators (bytes reach 10^13)."""

    @admin.display(description=description or field.replace("_", " "), ordering=field)
    def column(obj: Any) -> str:
        value = getattr(obj, field)
        return "-" if value is None else f"{value:,}"

    column.__name__ = field
    return column


def moment(field: str, description: str | None = None) -> Callable[[Any], SafeString | str]:
    """A list column showing the time ``field`` as "2021-07-18 00:05:00 UTC".

    A narrow column breaks it between the date, the clock and the zone only, never
    inside the date (at a hyphen) as a plain time would be.
    """

    @admin.display(description=description or field.replace("_", " "), ordering=field)
    def column(obj: Any) -> SafeString | str:
        value = getattr(obj, field)
        if value is None:
            return "-"
        local = timezone.localtime(value)
        return format_html(
            '<span class="nowrap">{}</span> <span class="nowrap">{}</span> {}',
            date_format(local, "Y-m-d"),
            date_format(local, "H:i:s"),
            date_format(local, "T"),
        )

    column.__name__ = field
    return column


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows come from the pipeline only; the admin shows them."""

    # COUNT(*) on a table of years of rows is slow; skip the full count.
    show_full_result_count = False
    list_per_page = 100

    class Media:
        css = {"all": ["kpis/admin.css"]}

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
        moment("interval_start_timestamp"),
        moment("interval_end_timestamp"),
        "interval",
        "service_id",
        grouped("total_bytes"),
    )
    list_filter = _TIME_FILTERS
    ordering = ("-interval_start_timestamp", "interval", "-total_bytes")
    search_fields = ("=service_id",)


@admin.register(CellUniqueUsers)
class CellUniqueUsersAdmin(ReadOnlyAdmin):
    list_display = (
        moment("interval_start_timestamp"),
        moment("interval_end_timestamp"),
        "interval",
        "cell_id",
        grouped("number_of_unique_users", "unique users"),
    )
    list_filter = _TIME_FILTERS
    ordering = ("-interval_start_timestamp", "interval", "-number_of_unique_users")
    search_fields = ("=cell_id",)


@admin.register(IntervalLedger)
class IntervalLedgerAdmin(ReadOnlyAdmin):
    list_display = (
        moment("interval_start_timestamp"),
        "interval",
        "revision",
        "complete",
        grouped("intervals_processed", "intervals"),
        "files_counted",
        "files_failed",
        "files_duplicate",
        "files_missing",
        "files_too_late",
        "restatable",
        grouped("rows_accepted"),
        grouped("rows_rejected"),
        moment("processed_at"),
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
        moment("interval_start_timestamp"),
        "status",
        grouped("rows_accepted"),
        grouped("rows_rejected"),
        "interval_revision",
        moment("processed_at"),
        moment("missing_since"),
        "error",
    )
    list_filter = ("status", ("interval_start_timestamp", admin.DateFieldListFilter))
    search_fields = ("name",)
    ordering = ("-interval_start_timestamp", "name")


@admin.register(UpdateRun)
class UpdateRunAdmin(ReadOnlyAdmin):
    list_display = (
        moment("finished_at"),
        "exit_status",
        "duration_seconds",
        grouped("intervals_processed"),
        grouped("files_read"),
        "files_failed",
        grouped("rows_accepted"),
        grouped("rows_rejected"),
    )
    list_filter = ("exit_status",)
