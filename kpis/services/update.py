"""Every write of the service: process intervals, roll up hours, hold the run lock.

The flow of one run (:func:`network_stats_update`):
scan the folder -> find intervals with new or changed files -> read those
files (pure pipeline) -> persist each interval in one transaction -> roll up
every hour that is due and touched. Work grows with the new files only.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from kpis.models import (
    FileState,
    InputFileRecord,
    InputFileStatus,
    IntervalLedger,
    IntervalType,
)
from kpis.pipeline import (
    HOUR,
    INTERVAL,
    FileOutcome,
    InputFile,
    aggregate_file,
    hour_start_for,
    key_id_for,
)
from kpis.pipeline.executors import (
    ExecutorConfig,
    ExecutorFailed,
    FileExecutor,
    WorkerLost,
    executor_for,
)

# Object storage: the input may be an s3:// prefix (see kpis/pipeline/location.py).
from kpis.pipeline.location import InputPath, input_exists, input_join
from kpis.registry import KPIS
from kpis.services.folder import FolderListing, folder_list
from kpis.services.restatement import (
    Refusal,
    TooLateFile,
    file_sha256,
    hour_is_final,
    hours_closed,
    restatement_refusals,
    too_late_files_record,
)
from kpis.services.retention import final_hour_states_drop, hour_states_drop
from kpis.services.state import file_state_load, file_state_save

if TYPE_CHECKING:
    # Imported where used: pandas and pyarrow load only in a run that reads files or states.
    from kpis.pipeline import Partial

logger = logging.getLogger("kpis.update")

# How often the wait for files read elsewhere wakes up to renew the run's lock.
_WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class UpdateConfig:
    """Everything one run needs to know; built by the command from settings and options."""

    input_dir: InputPath  # a folder, or an s3:// prefix
    now: datetime
    top_n: int
    grace: timedelta
    hash_key: str
    block_size: int
    since: datetime | None = None
    until: datetime | None = None
    # KPI_RESTATE_DAYS: how long after its end an hour still takes late files.
    restate_window: timedelta = timedelta(days=3)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    @property
    def reprocess(self) -> bool:
        """A range was named: recompute it from its files even if nothing changed."""
        return self.since is not None or self.until is not None


@dataclass
class IntervalResult:
    """What processing one interval did, for logs and progress."""

    start: datetime
    interval: IntervalType
    revision: int
    files_read: int
    files_failed: int
    files_duplicate: int
    rows_accepted: int
    rows_rejected: int
    rows_changed: bool

    def log_line(self) -> str:
        kind = "interval" if self.interval == IntervalType.FIVE_MINUTES else "hour"
        return (
            f"{kind}={self.start:%Y-%m-%dT%H:%MZ} revision={self.revision} "
            f"files_read={self.files_read} files_failed={self.files_failed} "
            f"files_duplicate={self.files_duplicate} rows_accepted={self.rows_accepted} "
            f"rows_rejected={self.rows_rejected} changed={'yes' if self.rows_changed else 'no'}"
        )

    def log_fields(self) -> dict[str, object]:
        """The same figures as :meth:`log_line`, as fields for structured (JSON) logs."""
        return {
            "kind": "interval" if self.interval == IntervalType.FIVE_MINUTES else "hour",
            "interval_start": self.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "revision": self.revision,
            "files_read": self.files_read,
            "files_failed": self.files_failed,
            "files_duplicate": self.files_duplicate,
            "rows_accepted": self.rows_accepted,
            "rows_rejected": self.rows_rejected,
            "changed": self.rows_changed,
        }


@dataclass
class RunSummary:
    """Totals of one run, printed as its last line."""

    intervals_processed: int = 0
    intervals_changed: int = 0
    files_read: int = 0
    files_failed: int = 0
    files_duplicate: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    hours_rolled_up: int = 0
    hours_made_final: int = 0
    failures: list[str] = field(default_factory=list)
    too_late: list[TooLateFile] = field(default_factory=list)
    # A restatement refused as a whole: the run changed nothing.
    refused: list[Refusal] = field(default_factory=list)

    def add_interval(self, result: IntervalResult) -> None:
        self.intervals_processed += 1
        self.intervals_changed += int(result.rows_changed)
        self.files_read += result.files_read
        self.files_failed += result.files_failed
        self.files_duplicate += result.files_duplicate
        self.rows_accepted += result.rows_accepted
        self.rows_rejected += result.rows_rejected

    def line(self) -> str:
        return (
            f"intervals processed: {self.intervals_processed} "
            f"(changed: {self.intervals_changed}), files read: {self.files_read}, "
            f"files failed: {self.files_failed}, duplicates: {self.files_duplicate}, "
            f"rows accepted: {self.rows_accepted}, rows rejected: {self.rows_rejected}, "
            f"hours rolled up: {self.hours_rolled_up}"
            + (f", files too late: {len(self.too_late)}" if self.too_late else "")
            + (f", hours made final: {self.hours_made_final}" if self.hours_made_final else "")
        )


class Observer:
    """Hooks a caller can override to show progress; the default does nothing."""

    def planned(self, *, intervals: int) -> None:
        """Called once with the number of intervals this run will process."""

    def interval_done(self, result: IntervalResult) -> None:
        """Called after each interval (or hour) is committed."""


# --- one interval ------------------------------------------------------------


def _kpi_rows_replace(
    *, start: datetime, interval: IntervalType, partial: Partial, top_n: int
) -> bool:
    """Replace the KPI rows of one interval; return whether they changed."""
    end = start + (INTERVAL if interval == IntervalType.FIVE_MINUTES else HOUR)
    changed = False
    for kpi in KPIS:
        ranked = kpi.rank(partial, top_n)
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


def _record_outcome(
    *,
    record: InputFileRecord,
    outcome: FileOutcome,
    revision: int,
) -> None:
    """Fill a file's ledger row from what reading it found; save its state if counted."""
    record.rows_accepted = outcome.stats.rows_accepted
    record.rows_rejected = outcome.stats.rows_rejected
    record.rejects = {str(reason): count for reason, count in sorted(outcome.stats.rejects.items())}
    record.sha256 = outcome.stats.sha256
    record.error = outcome.error or ""
    record.duplicate_of = ""
    record.interval_revision = revision
    record.processed_at = timezone.now()
    record.missing_since = None
    if outcome.error is not None:
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
        assert outcome.partial is not None
        file_state_save(record=record, partial=outcome.partial)
    else:
        FileState.objects.filter(file=record).delete()


def interval_persist(
    *,
    start: datetime,
    on_disk: list[InputFile],
    outcomes: dict[str, FileOutcome],
    config: UpdateConfig,
    cache: dict[str, Partial],
) -> IntervalResult:
    """Record the files read for one interval and recompute its rows, in one transaction.

    ``outcomes`` holds the files read in this run; every other counted file of
    the interval contributes its stored state, so a late file never needs the
    older ones re-read and a vanished file is never lost.
    """
    from kpis.pipeline import Partial

    key_id = key_id_for(config.hash_key)
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
        for name, outcome in outcomes.items():
            input_file = by_name[name]
            record = records.get(name) or InputFileRecord(name=name, interval_start_timestamp=start)
            record.size = input_file.size
            record.mtime_ns = input_file.mtime_ns
            _record_outcome(record=record, outcome=outcome, revision=revision)
            records[name] = record
            if record.status == InputFileStatus.COUNTED and outcome.partial is not None:
                cache[name] = outcome.partial

        now = timezone.now()
        for name, record in records.items():
            if name not in by_name and record.missing_since is None:
                record.missing_since = now
                record.save(update_fields=["missing_since"])
                logger.warning("file %s is gone from the input folder; its counts are kept", name)

        counted = [r for r in records.values() if r.status == InputFileStatus.COUNTED]
        partial = Partial.merge(
            (cache.get(r.name) or _cache_put(cache, r) for r in counted), key_id=key_id
        )
        changed = _kpi_rows_replace(
            start=start, interval=IntervalType.FIVE_MINUTES, partial=partial, top_n=config.top_n
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

    read = list(outcomes.values())
    return IntervalResult(
        start=start,
        interval=IntervalType.FIVE_MINUTES,
        revision=revision,
        files_read=len(read),
        files_failed=sum(1 for name in outcomes if records[name].status == InputFileStatus.FAILED),
        files_duplicate=sum(
            1 for name in outcomes if records[name].status == InputFileStatus.DUPLICATE
        ),
        rows_accepted=sum(outcome.stats.rows_accepted for outcome in read),
        rows_rejected=sum(outcome.stats.rows_rejected for outcome in read),
        rows_changed=changed,
    )


def _cache_put(cache: dict[str, Partial], record: InputFileRecord) -> Partial:
    partial = file_state_load(record=record)
    cache[record.name] = partial
    return partial


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


# --- one hour ----------------------------------------------------------------


def hour_roll_up(
    *, hour_start: datetime, config: UpdateConfig, cache: dict[str, Partial]
) -> IntervalResult:
    """Recompute an hour's rows exactly from the state of all its counted files."""
    from kpis.pipeline import Partial

    key_id = key_id_for(config.hash_key)
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
        partial = Partial.merge(
            (cache.get(r.name) or file_state_load(record=r) for r in counted), key_id=key_id
        )
        changed = _kpi_rows_replace(
            start=hour_start, interval=IntervalType.ONE_HOUR, partial=partial, top_n=config.top_n
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


# --- one run -----------------------------------------------------------------


def _is_due(end: datetime, config: UpdateConfig) -> bool:
    return config.now >= end + config.grace


def _in_range(start: datetime, config: UpdateConfig) -> bool:
    if config.since is not None and start < config.since:
        return False
    return config.until is None or start < config.until


def _dirty_files(listing: FolderListing, config: UpdateConfig) -> set[str]:
    """The names of the due files that are new, or whose content changed since they were read.

    One query fetches the fingerprints of every record in the span of the folder
    and a set finds the files not read as they are; only those are looked at one
    by one, so a run with nothing new costs no query per file here.
    """
    if not listing.stats:
        return set()
    first, last = listing.span()
    # A record marked missing is left out, so that its file, back in the folder, is noticed.
    present = InputFileRecord.objects.filter(
        interval_start_timestamp__gte=first,
        interval_start_timestamp__lte=last,
        missing_since__isnull=True,
    ).order_by()
    candidates = listing.unrecorded(present.values_list("name", "size", "mtime_ns"))
    due = sorted(listing.due(candidates, due_before=config.now - config.grace))
    fingerprint = InputFileRecord.objects.only(
        "name", "size", "mtime_ns", "sha256", "missing_since"
    )
    known: dict[str, InputFileRecord] = {}
    for offset in range(0, len(due), 900):  # under SQLite's bound-parameter limit
        known.update(fingerprint.in_bulk(due[offset : offset + 900], field_name="name"))
    dirty = set()
    for name in due:
        _, size, mtime_ns = listing.stats[name]
        record = known.get(name)
        if record is None:
            dirty.add(name)
            continue
        if record.missing_since is not None:
            record.missing_since = None  # it came back
            record.save(update_fields=["missing_since"])
        if (record.size, record.mtime_ns) == (size, mtime_ns):
            continue
        if record.size == size and record.sha256:
            try:
                same = file_sha256(input_join(listing.directory, name)) == record.sha256
            except FileNotFoundError:
                continue
            if same:  # touched, not changed: remember the new time and move on
                record.mtime_ns = mtime_ns
                record.save(update_fields=["mtime_ns"])
                continue
        logger.info("file %s changed since it was read; its interval is recomputed", name)
        dirty.add(name)
    return dirty


def _read_submit(
    executor: FileExecutor,
    input_file: InputFile,
    config: UpdateConfig,
    heartbeat: Callable[[], None],
) -> Future[FileOutcome]:
    # The heartbeat can only be called per block in this process; elsewhere the
    # wait for results calls it (see _read_collect).
    on_block = {"on_block": heartbeat} if executor.in_process else {}
    try:
        return executor.submit(
            aggregate_file,
            input_file.path,
            hash_key=config.hash_key,
            block_size=config.block_size,
            **on_block,
        )
    except executor.lost as error:
        # A pool that broke refuses new work; report it where results are collected.
        failed: Future[FileOutcome] = Future()
        failed.set_exception(error)
        return failed


def _read_collect(
    jobs: list[tuple[InputFile, Future[FileOutcome]]],
    executor: FileExecutor,
    heartbeat: Callable[[], None],
) -> dict[str, FileOutcome]:
    """Wait for the files of one interval, keeping the lock alive; their outcomes by name."""
    from kpis.pipeline import ReadStats

    futures = [future for _, future in jobs]
    while wait(futures, timeout=_WAIT_SECONDS).not_done:
        heartbeat()
    heartbeat()
    outcomes: dict[str, FileOutcome] = {}
    for input_file, future in jobs:
        try:
            outcome = future.result()
        except executor.lost:
            raise
        except FileNotFoundError:
            if not (executor.remote and input_exists(input_file.path)):
                logger.warning("file %s disappeared before it could be read", input_file.name)
                continue
            # Here but not there: the worker does not see the input folder.
            outcome = FileOutcome(
                partial=None,
                stats=ReadStats(),
                error=(
                    f"a Dask worker could not find {input_file.path}: every worker must see "
                    "the input folder at the same path as this machine (shared storage)"
                ),
            )
        except Exception as error:
            if not executor.remote:
                raise
            raise ExecutorFailed(
                f"{executor.description} could not read {input_file.name}: "
                f"{type(error).__name__}: {' '.join(str(error).split())}; "
                "the scheduler and every worker must run this project's code with the same "
                "requirements (see the README, Parallel and distributed runs)"
            ) from error
        if outcome.error is not None:
            logger.error("file %s failed: %s", input_file.name, outcome.error)
        else:
            logger.debug(
                "read %s: rows accepted=%d rejected=%d",
                input_file.name,
                outcome.stats.rows_accepted,
                outcome.stats.rows_rejected,
            )
        outcomes[input_file.name] = outcome
    return outcomes


def _succeeded(future: Future[FileOutcome]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _outcomes_in_order(
    batches: list[tuple[datetime, list[InputFile]]],
    *,
    config: UpdateConfig,
    executor: FileExecutor,
    heartbeat: Callable[[], None],
) -> Iterator[tuple[datetime, dict[str, FileOutcome]]]:
    """Read the files of each interval on ``executor``; yield their outcomes in interval order.

    Later intervals are read while earlier ones are stored, but at most
    ``executor.slots`` files (or one interval's) are in flight or waiting, so
    memory stays bounded however long the backlog.
    """
    queue = deque(batches)
    pending: deque[tuple[datetime, list[tuple[InputFile, Future[FileOutcome]]]]] = deque()
    in_flight = 0
    renewed = False
    while queue or pending:
        while queue and (not pending or in_flight + len(queue[0][1]) <= executor.slots):
            start, files = queue.popleft()
            jobs = [(f, _read_submit(executor, f, config, heartbeat)) for f in files]
            pending.append((start, jobs))
            in_flight += len(files)
        start, jobs = pending[0]
        try:
            outcomes = _read_collect(jobs, executor, heartbeat)
        except executor.lost as error:
            unfinished = [f.name for _, js in pending for f, fut in js if not _succeeded(fut)]
            if renewed or not executor.renewable:
                raise WorkerLost(
                    f"a worker process died while reading ({error or type(error).__name__}); "
                    f"{len(unfinished)} file(s) were not read, from interval "
                    f"{start:%Y-%m-%dT%H:%MZ} on, and nothing of those intervals was stored; "
                    "the next run reads them again"
                ) from error
            logger.warning(
                "a worker process died while reading; reading %d unfinished file(s) again "
                "in a new pool of %s",
                len(unfinished),
                executor.description,
            )
            executor.renew()
            renewed = True
            for index, (interval, old_jobs) in enumerate(pending):
                pending[index] = (
                    interval,
                    [
                        (f, fut)
                        if _succeeded(fut)
                        else (f, _read_submit(executor, f, config, heartbeat))
                        for f, fut in old_jobs
                    ],
                )
            continue
        pending.popleft()
        in_flight -= len(jobs)
        yield start, outcomes


def network_stats_update(
    *,
    config: UpdateConfig,
    heartbeat: Callable[[], None] = lambda: None,
    observer: Observer | None = None,
) -> RunSummary:
    """Process every due interval with new or changed files, then roll up due hours."""
    observer = observer or Observer()
    summary = RunSummary()
    listing = folder_list(config.input_dir)
    restated: set[datetime] = set()
    if config.reprocess:
        due = listing.input_files(listing.due(listing.stats, due_before=config.now - config.grace))
        on_disk, restated = _restatement_select(due, config)
        summary.refused = restatement_refusals(hours=restated, on_disk={f.name for f in due})
        if summary.refused:
            return summary  # all or nothing: the run changes nothing
        dirty = on_disk
    else:
        # Only the intervals with new or changed files are looked at further.
        dirty_names = _dirty_files(listing, config)
        on_disk = listing.input_files(listing.same_intervals(dirty_names))
        dirty = [f for f in on_disk if f.name in dirty_names]
        closed = hours_closed(
            {hour_start_for(f.interval_start) for f in dirty},
            now=config.now,
            window=config.restate_window,
        )
        summary.too_late = too_late_files_record(
            files=[f for f in dirty if hour_start_for(f.interval_start) in closed]
        )
        dirty = [f for f in dirty if hour_start_for(f.interval_start) not in closed]
    files_by_interval: dict[datetime, list[InputFile]] = defaultdict(list)
    for input_file in on_disk:
        files_by_interval[input_file.interval_start].append(input_file)

    dirty_by_interval: dict[datetime, list[InputFile]] = defaultdict(list)
    for input_file in dirty:
        dirty_by_interval[input_file.interval_start].append(input_file)
    intervals_by_hour: dict[datetime, list[datetime]] = defaultdict(list)
    for start in sorted(dirty_by_interval):
        intervals_by_hour[hour_start_for(start)].append(start)
    observer.planned(intervals=len(dirty_by_interval))

    batches = [(start, dirty_by_interval[start]) for start in sorted(dirty_by_interval)]
    files_to_read = sum(len(files) for _, files in batches)
    with contextlib.ExitStack() as stack:
        read: Iterator[tuple[datetime, dict[str, FileOutcome]]] = iter(())
        if batches:
            executor = stack.enter_context(executor_for(config.executor, files=files_to_read))
            if not executor.in_process:
                logger.info("reading %d file(s) on %s", files_to_read, executor.description)
            read = _outcomes_in_order(
                batches, config=config, executor=executor, heartbeat=heartbeat
            )
        for hour_start, starts in sorted(intervals_by_hour.items()):
            # File states of this hour stay in memory until it is rolled up, then go.
            cache: dict[str, Partial] = {}
            for start in starts:
                heartbeat()
                read_start, outcomes = next(read)
                assert read_start == start
                result = interval_persist(
                    start=start,
                    on_disk=files_by_interval[start],
                    outcomes=outcomes,
                    config=config,
                    cache=cache,
                )
                summary.add_interval(result)
                summary.failures.extend(
                    f"{name}: {outcome.error}"
                    for name, outcome in outcomes.items()
                    if outcome.error
                )
                logger.info(result.log_line(), extra=result.log_fields())
                observer.interval_done(result)
            if _is_due(hour_start + HOUR, config):
                _hour_finish(hour_start, config, cache, summary, observer)

    # Hours whose intervals were processed by earlier runs and that are due now.
    pending = IntervalLedger.objects.filter(
        interval=IntervalType.ONE_HOUR,
        needs_rollup=True,
        interval_start_timestamp__lte=config.now - config.grace - HOUR,
    ).values_list("interval_start_timestamp", flat=True)
    for hour_start in sorted(pending):
        if _in_range(hour_start, config) or not config.reprocess:
            _hour_finish(hour_start, config, {}, summary, observer)

    for hour_start in sorted(restated):
        _restated_hour_settle(hour_start, config)
    summary.hours_made_final = len(
        final_hour_states_drop(now=config.now, window=config.restate_window)
    )
    return summary


def _restatement_select(
    due: list[InputFile], config: UpdateConfig
) -> tuple[list[InputFile], set[datetime]]:
    """The files a ``--since/--until`` run re-reads, and the closed hours it restates.

    A closed hour (final, or its states dropped) has no states to merge with: it is
    restated whole, every file of the hour re-read even outside the range.
    """
    in_range = [f for f in due if _in_range(f.interval_start, config)]
    hours = {hour_start_for(f.interval_start) for f in in_range}
    recorded = InputFileRecord.objects.all()
    if config.since is not None:
        recorded = recorded.filter(interval_start_timestamp__gte=config.since)
    if config.until is not None:
        recorded = recorded.filter(interval_start_timestamp__lt=config.until)
    hours.update(
        hour_start_for(start)
        for start in recorded.values_list("interval_start_timestamp", flat=True).distinct()
    )
    closed = hours_closed(hours, now=config.now, window=config.restate_window)
    selected = [
        f
        for f in due
        if _in_range(f.interval_start, config) or hour_start_for(f.interval_start) in closed
    ]
    return selected, closed


def _restated_hour_settle(hour_start: datetime, config: UpdateConfig) -> None:
    """After restating a closed hour: a final one drops its fresh states again."""
    if hour_is_final(hour_start, now=config.now, window=config.restate_window):
        hour_states_drop(hour_start=hour_start)
    else:  # states dropped early (pruned hour): every counted file has a state again
        IntervalLedger.objects.filter(
            interval_start_timestamp__gte=hour_start,
            interval_start_timestamp__lt=hour_start + HOUR,
        ).update(states_kept=True)


def _hour_finish(
    hour_start: datetime,
    config: UpdateConfig,
    cache: dict[str, Partial],
    summary: RunSummary,
    observer: Observer,
) -> None:
    result = hour_roll_up(hour_start=hour_start, config=config, cache=cache)
    summary.hours_rolled_up += 1
    logger.info(result.log_line(), extra=result.log_fields())
    observer.interval_done(result)
