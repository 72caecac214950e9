"""Reads: the ledger as the API shows it, freshness of the data and the run history."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import Error as DatabaseLayerError
from django.db.models import BooleanField, Count, ExpressionWrapper, Max, Q, Sum

from kpis.models import (
    InputFileRecord,
    InputFileStatus,
    IntervalLedger,
    IntervalType,
    LedgerQuerySet,
    UpdateRun,
)

logger = logging.getLogger("kpis.health")

_HOUR = timedelta(hours=1)


def first_open_interval_start(*, now: datetime, window: timedelta) -> datetime:
    """Intervals starting at or after this moment lie in hours that are not final at ``now``.

    An hour is final once it ended more than ``window`` before ``now``
    (``kpis.services.restatement.hour_is_final``): the first hour that is not is
    the first one starting at or after ``now - window - 1 hour``.
    """
    boundary = now.astimezone(UTC) - window - _HOUR
    hour = boundary.replace(minute=0, second=0, microsecond=0)
    return hour if hour == boundary else hour + _HOUR


def ledger_entries(
    *, now: datetime, window: timedelta, entries: LedgerQuerySet | None = None
) -> LedgerQuerySet:
    """The ledger (or ``entries`` of it), each with ``restatable``: would a late file for the
    interval still be merged?

    Yes while the hour's states are kept and the hour is not final at ``now``. A run drops
    the states of final hours in bounded batches, so after a catch-up over days states may
    still be kept for hours that are already final: a late file for those is too late.
    """
    open_from = first_open_interval_start(now=now, window=window)
    open_hours = Q(states_kept=True, interval_start_timestamp__gte=open_from)
    queryset = IntervalLedger.objects.all() if entries is None else entries
    return queryset.annotate(restatable=ExpressionWrapper(open_hours, output_field=BooleanField()))


def latest_interval_end() -> datetime | None:
    """The end of the newest five-minute interval with accepted rows, or None before the first.

    An interval whose files all failed (or held only rejected rows) is processed but
    has no KPI rows: it must not make the data look fresh.
    """
    return (
        IntervalLedger.objects.filter(
            interval=IntervalType.FIVE_MINUTES, revision__gt=0, rows_accepted__gt=0
        )
        .order_by("-interval_start_timestamp")
        .values_list("interval_end_timestamp", flat=True)
        .first()
    )


def file_counts_by_status() -> dict[str, int]:
    """How many raw files the ledger holds in each status, every status included."""
    counts = dict.fromkeys(InputFileStatus.values, 0)
    rows = InputFileRecord.objects.order_by().values("status").annotate(files=Count("id"))
    for row in rows:
        counts[row["status"]] = row["files"]
    return counts


def row_counts() -> dict[str, int]:
    """Rows accepted and rejected over all counted files of the ledger."""
    totals = InputFileRecord.objects.filter(status=InputFileStatus.COUNTED).aggregate(
        accepted=Sum("rows_accepted"), rejected=Sum("rows_rejected")
    )
    return {"accepted": totals["accepted"] or 0, "rejected": totals["rejected"] or 0}


@dataclass(frozen=True)
class RunHistory:
    """What the kept run history says about ``update_network_stats``."""

    last: UpdateRun | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    runs_by_exit_status: dict[int, int]


def run_history() -> RunHistory:
    """The last run, the last good and failed ones, and the runs kept per exit status."""
    runs = UpdateRun.objects.all()
    by_status = runs.order_by().values("exit_status").annotate(runs=Count("id"))
    return RunHistory(
        last=runs.newest_first().first(),
        last_success_at=runs.filter(exit_status=0).aggregate(at=Max("finished_at"))["at"],
        last_failure_at=runs.failed().aggregate(at=Max("finished_at"))["at"],
        # 0 and 1 always, so that a query for failed runs finds a series even before one.
        runs_by_exit_status={0: 0, 1: 0} | {row["exit_status"]: row["runs"] for row in by_status},
    )


# Every status /api/health/ can report; only "ok" is a 200.
HEALTH_STATUSES = ("ok", "stale", "empty", "database unavailable")


@dataclass(frozen=True)
class Health:
    """Is the newest data recent enough? ``status`` is "ok", "stale", "empty" or
    "database unavailable"."""

    status: str
    latest_interval_end: datetime | None = None
    lag_seconds: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def data_health(*, now: datetime, max_lag_seconds: int) -> Health:
    """How far the newest five-minute interval with accepted rows lags behind ``now``."""
    try:
        latest = latest_interval_end()
    except DatabaseLayerError as error:
        # The answer says only "database unavailable"; the reason goes to the log.
        logger.error("health check: the database is unavailable: %s", error)
        return Health("database unavailable")
    if latest is None:
        return Health("empty")
    lag = int((now - latest).total_seconds())
    return Health("ok" if lag <= max_lag_seconds else "stale", latest, lag)
