"""Writing results: one interval, or one hour, each in one transaction.

An interval's rows are recomputed from the states of all its counted files:
the files read in this run and every other counted file's stored state, so a
late file never needs the older ones re-read and a vanished file is never
lost. An hour's rows are recomputed, exactly, from the states of all its
files. The merging itself is handed in (``merge``): it runs on the executor.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from kpis.models import InputFileRecord, InputFileStatus, IntervalLedger, IntervalType
from kpis.pipeline import HOUR, INTERVAL, InputFile, hour_start_for
from kpis.registry import KPIS, Ranked
from kpis.services.config import UpdateConfig
from kpis.services.read import FileRead
from kpis.services.state import (
    file_states_clear,
    file_states_replace,
    state_keys,
    states_delete_on_commit,
)
from kpis.services.summary import IntervalResult

logger = logging.getLogger("kpis.update")

# Merges the states under some keys (the second argument names what, for messages).
Merge = Callable[[list[str], str], Ranked]


def _kpi_rows_replace(
    *, start: datetime, interval: IntervalType, merged: Ranked, top_n: int
) -> bool:
    """Replace the KPI rows of one interval; return whether they changed."""
    end = start + (INTERVAL if interval == IntervalType.FIVE_MINUTES else HOUR)
    changed = False
    for kpi in KPIS:
        ranked = kpi.rank(merged, top_n)
        existing = kpi.model.objects.of_interval(start=start, interval=interval)
        before = list(existing.values_list(kpi.key_field, kpi.value_field))
        if sorted(before) == sorted(ranked):
            continue
        changed = True
        existing.delete()
        kpi.model.objects.bulk_create(
            kpi.model(
                interval_start_timestamp=start,
                interval_end_timestamp=end,
                interval=interval,
                **{kpi.key_field: key, kpi.value_field: value},
            )
            for key, value in ranked
        )
    return changed


def _record_outcome(*, record: InputFileRecord, read: FileRead, revision: int) -> None:
    """Fill a file's ledger row from what reading it found; reference its states if counted."""
    record.rows_accepted = read.stats.rows_accepted
    record.rows_rejected = read.stats.rows_rejected
    record.rejects = {str(reason): count for reason, count in sorted(read.stats.rejects.items())}
    record.sha256 = read.stats.sha256
    record.error = read.error or ""
    record.duplicate_of = ""
    record.interval_revision = revision
    record.processed_at = timezone.now()
    record.missing_since = None
    if read.error is not None:
        record.status = InputFileStatus.FAILED
    else:
        original = (
            InputFileRecord.objects.filter(
                sha256=record.sha256, status=InputFileStatus.COUNTED, rows_accepted__gt=0
            )
            .exclude(pk=record.pk)
            .values_list("name", flat=True)
            .first()
            if record.rows_accepted
            else None
        )
        if original is not None:
            # The same content under another name: a re-delivery, never counted twice.
            record.status = InputFileStatus.DUPLICATE
            record.duplicate_of = original
        else:
            record.status = InputFileStatus.COUNTED
    record.save()
    if record.status == InputFileStatus.COUNTED:
        file_states_replace(record=record, states=read.states)
    else:
        file_states_clear(record=record)
        states_delete_on_commit([state.key for state in read.states])


def interval_persist(
    *,
    start: datetime,
    on_disk: list[InputFile],
    reads: dict[str, FileRead],
    config: UpdateConfig,
    merge: Merge,
) -> IntervalResult:
    """Record the files read for one interval and recompute its rows, in one transaction."""
    with transaction.atomic():
        ledger, _ = IntervalLedger.objects.select_for_update().get_or_create(
            interval=IntervalType.FIVE_MINUTES,
            interval_start_timestamp=start,
            defaults={"interval_end_timestamp": start + INTERVAL},
        )
        revision = ledger.revision + 1
        records = {
            record.name: record
            for record in InputFileRecord.objects.filter(interval_start_timestamp=start)
        }
        by_name = {input_file.name: input_file for input_file in on_disk}
        for name, read in reads.items():
            input_file = by_name[name]
            record = records.get(name) or InputFileRecord(name=name, interval_start_timestamp=start)
            record.size = input_file.size
            record.mtime_ns = input_file.mtime_ns
            _record_outcome(record=record, read=read, revision=revision)
            records[name] = record

        now = timezone.now()
        for name, record in records.items():
            if name not in by_name and record.missing_since is None:
                record.missing_since = now
                record.save(update_fields=["missing_since"])
                logger.warning("file %s is gone from the input folder; its counts are kept", name)

        counted = [r for r in records.values() if r.status == InputFileStatus.COUNTED]
        merged = merge(state_keys(counted), f"interval {start:%Y-%m-%dT%H:%MZ}")
        changed = _kpi_rows_replace(
            start=start, interval=IntervalType.FIVE_MINUTES, merged=merged, top_n=config.top_n
        )
        _ledger_fill(ledger, records.values())
        ledger.revision = revision
        ledger.processed_at = now
        ledger.save()
        hour, _ = IntervalLedger.objects.get_or_create(
            interval=IntervalType.ONE_HOUR,
            interval_start_timestamp=hour_start_for(start),
            defaults={"interval_end_timestamp": hour_start_for(start) + HOUR},
        )
        if not hour.needs_rollup:
            hour.needs_rollup = True
            hour.save(update_fields=["needs_rollup"])

    return IntervalResult(
        start=start,
        interval=IntervalType.FIVE_MINUTES,
        revision=revision,
        files_read=len(reads),
        files_failed=sum(1 for name in reads if records[name].status == InputFileStatus.FAILED),
        files_duplicate=sum(
            1 for name in reads if records[name].status == InputFileStatus.DUPLICATE
        ),
        rows_accepted=sum(read.stats.rows_accepted for read in reads.values()),
        rows_rejected=sum(read.stats.rows_rejected for read in reads.values()),
        rows_changed=changed,
    )


def _ledger_fill(ledger: IntervalLedger, records: Iterable[InputFileRecord]) -> None:
    """Sum the ledger figures of the given file records into ``ledger``."""
    statuses: Counter[str] = Counter()
    rejects: Counter[str] = Counter()
    accepted = rejected = missing = 0
    for record in records:
        statuses[record.status] += 1
        missing += record.missing_since is not None
        if record.status == InputFileStatus.COUNTED:
            accepted += record.rows_accepted
            rejected += record.rows_rejected
            rejects.update(record.rejects)
    ledger.files_counted = statuses[InputFileStatus.COUNTED]
    ledger.files_failed = statuses[InputFileStatus.FAILED]
    ledger.files_duplicate = statuses[InputFileStatus.DUPLICATE]
    ledger.files_missing = missing
    ledger.files_too_late = statuses[InputFileStatus.TOO_LATE]
    ledger.rows_accepted = accepted
    ledger.rows_rejected = rejected
    ledger.rejects = dict(sorted(rejects.items()))


def hour_roll_up(*, hour_start: datetime, config: UpdateConfig, merge: Merge) -> IntervalResult:
    """Recompute an hour's rows exactly from the states of all its counted files."""
    hour_end = hour_start + HOUR
    with transaction.atomic():
        ledger, _ = IntervalLedger.objects.select_for_update().get_or_create(
            interval=IntervalType.ONE_HOUR,
            interval_start_timestamp=hour_start,
            defaults={"interval_end_timestamp": hour_end},
        )
        records = list(
            InputFileRecord.objects.filter(
                interval_start_timestamp__gte=hour_start, interval_start_timestamp__lt=hour_end
            )
        )
        counted = [r for r in records if r.status == InputFileStatus.COUNTED]
        merged = merge(state_keys(counted), f"hour {hour_start:%Y-%m-%dT%H:%MZ}")
        changed = _kpi_rows_replace(
            start=hour_start, interval=IntervalType.ONE_HOUR, merged=merged, top_n=config.top_n
        )
        _ledger_fill(ledger, records)
        ledger.intervals_processed = IntervalLedger.objects.filter(
            interval=IntervalType.FIVE_MINUTES,
            interval_start_timestamp__gte=hour_start,
            interval_start_timestamp__lt=hour_end,
            revision__gt=0,
        ).count()
        ledger.revision += 1
        ledger.needs_rollup = False
        ledger.processed_at = timezone.now()
        ledger.save()
    return IntervalResult(
        start=hour_start,
        interval=IntervalType.ONE_HOUR,
        revision=ledger.revision,
        files_read=0,
        files_failed=ledger.files_failed,
        files_duplicate=ledger.files_duplicate,
        rows_accepted=ledger.rows_accepted,
        rows_rejected=ledger.rows_rejected,
        rows_changed=changed,
    )
