"""Retention: dropping the file states of final hours, pruning old KPI rows and ledger entries."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

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
from kpis.services.restatement import final_hours_before
from kpis.services.state import file_states_drop

logger = logging.getLogger("kpis.update")

# Hours whose states one update run drops at most: after an upgrade with a long history
# the backlog is worked off over a few runs instead of one long first run.
STATE_DROP_HOURS_PER_RUN = 24


def hour_states_drop(*, hour_start: datetime) -> int:
    """Drop the file states of one hour and mark its ledger entries; return states dropped.

    KPI rows, ledger figures and file records stay; the hour can then only be
    restated from its raw files.
    """
    end = hour_start + HOUR
    with transaction.atomic():
        deleted = file_states_drop(start=hour_start, end=end)
        IntervalLedger.objects.filter(
            interval_start_timestamp__gte=hour_start, interval_start_timestamp__lt=end
        ).update(states_kept=False)
    return deleted


def final_hour_states_drop(
    *, now: datetime, window: timedelta, limit: int = STATE_DROP_HOURS_PER_RUN
) -> list[datetime]:
    """Drop the states of up to ``limit`` rolled-up hours that are final, oldest first.

    One indexed query on the ledger finds them; hours dropped earlier are not visited.
    """
    hours = list(
        IntervalLedger.objects.filter(
            states_kept=True,
            interval=IntervalType.ONE_HOUR,
            interval_start_timestamp__lt=final_hours_before(now=now, window=window),
            needs_rollup=False,
        )
        .order_by("interval_start_timestamp")
        .values_list("interval_start_timestamp", flat=True)[:limit]
    )
    for hour_start in hours:
        dropped = hour_states_drop(hour_start=hour_start)
        logger.info(
            "hour=%s is final: its file states are dropped (%d states)",
            f"{hour_start:%Y-%m-%dT%H:%MZ}",
            dropped,
        )
    return hours


def kpi_rows_prune(
    *, five_minute_before: datetime, hourly_before: datetime | None = None, dry_run: bool = False
) -> dict[str, int]:
    """Delete the KPI rows and ledger entries of intervals that ended at or before the cutoffs.

    Five-minute ones always, hourly ones only when ``hourly_before`` is given. File
    records are never touched. File states are left to the restatement window, except
    those of hours whose hourly ledger entry goes: nothing would find them afterwards.
    Returns the rows deleted (or, in a dry run, that would be) per table.
    """
    cutoffs = {IntervalType.FIVE_MINUTES: (five_minute_before, INTERVAL)}
    if hourly_before is not None:
        cutoffs[IntervalType.ONE_HOUR] = (hourly_before, HOUR)
    models: list[type[KpiRow] | type[IntervalLedger]] = [*(kpi.model for kpi in KPIS)]
    models.append(IntervalLedger)
    counts: dict[str, int] = {}
    with transaction.atomic():
        if hourly_before is not None and not dry_run:
            kept = IntervalLedger.objects.filter(
                states_kept=True,
                interval=IntervalType.ONE_HOUR,
                interval_start_timestamp__lte=hourly_before - HOUR,
            ).values_list("interval_start_timestamp", flat=True)
            for hour_start in list(kept):
                hour_states_drop(hour_start=hour_start)
        for interval, (cutoff, duration) in cutoffs.items():
            for model in models:
                # On the start column, which is indexed: ends at or before the cutoff.
                old = model.objects.filter(
                    interval=interval, interval_start_timestamp__lte=cutoff - duration
                )
                label = f"{model.__name__} {IntervalType(interval).label}"
                counts[label] = old.count() if dry_run else old.delete()[0]
    return counts
