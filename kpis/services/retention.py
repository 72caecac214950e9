"""Retention: pruning old KPI rows and ledger entries."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from kpis.models import (
    IntervalLedger,
    IntervalType,
    KpiRow,
)
from kpis.pipeline import (
    HOUR,
    INTERVAL,
)
from kpis.registry import KPIS


def kpi_rows_prune(
    *, five_minute_before: datetime, hourly_before: datetime | None = None, dry_run: bool = False
) -> dict[str, int]:
    """Delete the KPI rows and ledger entries of intervals that ended at or before the cutoffs.

    Five-minute ones always, hourly ones only when ``hourly_before`` is given. File
    records and stored file states are never touched: a late file still recomputes
    its hour exactly. Returns the rows deleted (or, in a dry run, that would be) per table.
    """
    cutoffs = {IntervalType.FIVE_MINUTES: (five_minute_before, INTERVAL)}
    if hourly_before is not None:
        cutoffs[IntervalType.ONE_HOUR] = (hourly_before, HOUR)
    models: list[type[KpiRow] | type[IntervalLedger]] = [*(kpi.model for kpi in KPIS)]
    models.append(IntervalLedger)
    counts: dict[str, int] = {}
    with transaction.atomic():
        for interval, (cutoff, duration) in cutoffs.items():
            for model in models:
                # On the start column, which is indexed: ends at or before the cutoff.
                old = model.objects.filter(
                    interval=interval, interval_start_timestamp__lte=cutoff - duration
                )
                label = f"{model.__name__} {IntervalType(interval).label}"
                counts[label] = old.count() if dry_run else old.delete()[0]
    return counts
