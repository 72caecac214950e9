"""One ``update_network_stats`` run: list, choose, read, persist, roll up, make final.

The steps live in their own modules: :mod:`~kpis.services.plan` chooses the
files, :mod:`~kpis.services.read` reads them and merges stored states on the
executor, :mod:`~kpis.services.persist` writes each interval and hour in one
transaction, :mod:`~kpis.services.retention` drops the states of final hours.
Work grows with the new files only.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from kpis.models import IntervalLedger, IntervalType
from kpis.pipeline import HOUR, InputFile, hour_start_for
from kpis.pipeline.executors import FileExecutor, executor_for
from kpis.registry import Ranked
from kpis.services.config import UpdateConfig
from kpis.services.folder import FolderListing, folder_list
from kpis.services.merge import states_ranking
from kpis.services.persist import hour_roll_up, interval_persist
from kpis.services.plan import RunPlan, run_plan
from kpis.services.read import FileRead, reads_in_order
from kpis.services.restatement import hour_is_final
from kpis.services.retention import final_hour_states_drop, hour_states_drop
from kpis.services.state import orphan_states_sweep, state_store
from kpis.services.summary import IntervalResult, Observer, RunSummary

logger = logging.getLogger("kpis.update")


def network_stats_update(
    *,
    config: UpdateConfig,
    heartbeat: Callable[[], None] = lambda: None,
    observer: Observer | None = None,
) -> RunSummary:
    """Process every due interval with new or changed files, then roll up due hours."""
    observer = observer or Observer()
    listing = folder_list(config.input_dir)  # list
    plan = run_plan(listing, config)  # choose
    summary = RunSummary(too_late=plan.too_late, refused=plan.refused)
    summary.files_ignored = _ignored_report(listing)
    if plan.refused:
        return summary  # all or nothing: the run changes nothing
    _leftovers_sweep(plan, config)
    pending = _pending_hours(config, plan)
    observer.planned(intervals=len(plan.batches()))
    with _executor(config, plan, pending) as executor:
        if executor is not None:
            run = _Run(config, executor, heartbeat, summary, observer)
            _intervals_process(run, plan)  # read, persist, roll up each hour once complete
            for hour_start in pending:  # roll up what earlier runs left
                _hour_finish(run, hour_start)
    _restated_hours_settle(plan, config)
    summary.hours_made_final = len(  # make final
        final_hour_states_drop(now=config.now, window=config.restate_window)
    )
    return summary


def _ignored_report(listing: FolderListing) -> int:
    """How many files the listing ignored; their names at verbosity 2 (debug)."""
    if listing.ignored:
        logger.debug(
            "%d file(s) ignored: their names do not follow the contract "
            "<prefix>.<stream>-<epoch_ms>.<part>.csv[.gz] "
            "(e.g. network.records-1626566720000.0.csv): %s",
            len(listing.ignored),
            ", ".join(sorted(listing.ignored)[:5]),
        )
    return len(listing.ignored)


def _leftovers_sweep(plan: RunPlan, config: UpdateConfig) -> None:
    """Remove the states a crashed run left in the hours this run writes."""
    if not config.state_prefix:  # a dry run leaves the hours' folders alone
        orphan_states_sweep(hours=plan.hours() | plan.restated, store=state_store(config.state_url))


@contextlib.contextmanager
def _executor(
    config: UpdateConfig, plan: RunPlan, pending: list[datetime]
) -> Iterator[FileExecutor | None]:
    """The executor the run's reads and merges go to; None when there is nothing to do."""
    files = len(plan.dirty)
    if not files and not pending:
        yield None
        return
    # Merges use every worker, reads at most one a file.
    with executor_for(
        config.executor, files=max(files, config.executor.workers if pending else 1)
    ) as executor:
        if files and not executor.in_process:
            logger.info("reading %d file(s) on %s", files, executor.description)
        yield executor


@dataclass
class _Run:
    """What the steps of one run share once the executor is open."""

    config: UpdateConfig
    executor: FileExecutor
    heartbeat: Callable[[], None]
    summary: RunSummary
    observer: Observer
    # Rankings already known by their states' keys: a file's own, made while it was read,
    # and each merge of this run (an hour of one interval merges what that interval did).
    known: dict[tuple[str, ...], Ranked] = field(default_factory=dict)

    def merge(self, keys: list[str], what: str) -> Ranked:
        ranked = self.known.get(tuple(keys))
        if ranked is None:
            ranked = states_ranking(
                keys,
                config=self.config,
                executor=self.executor,
                heartbeat=self.heartbeat,
                what=what,
            )
            self.known[tuple(keys)] = ranked
        return ranked

    def read(self, reads: dict[str, FileRead]) -> None:
        from kpis.pipeline.tasks import Ranking

        for read in reads.values():
            if read.tops is not None and len(read.states) == 1:
                self.known[(read.states[0].key,)] = Ranking.of([read.tops])

    def done(self, result: IntervalResult) -> None:
        logger.info(result.log_line(), extra=result.log_fields())
        self.observer.interval_done(result)


def _intervals_process(run: _Run, plan: RunPlan) -> None:
    """Persist each interval as its files are read; roll up each hour once all of it is in."""
    on_disk: dict[datetime, list[InputFile]] = defaultdict(list)
    for input_file in plan.on_disk:
        on_disk[input_file.interval_start].append(input_file)
    reads = reads_in_order(
        plan.batches(), config=run.config, executor=run.executor, heartbeat=run.heartbeat
    )
    hour: datetime | None = None
    for start, files_read in reads:
        run.heartbeat()
        run.read(files_read)
        if hour is not None and hour != hour_start_for(start):
            _hour_finish_if_due(run, hour)
        hour = hour_start_for(start)
        result = interval_persist(
            start=start,
            on_disk=on_disk[start],
            reads=files_read,
            config=run.config,
            merge=run.merge,
        )
        run.summary.add_interval(result)
        run.summary.failures.extend(
            f"{name}: {read.error}" for name, read in files_read.items() if read.error
        )
        run.done(result)
    if hour is not None:
        _hour_finish_if_due(run, hour)


def _pending_hours(config: UpdateConfig, plan: RunPlan) -> list[datetime]:
    """Due hours that earlier runs left to roll up, and this run does not touch."""
    due = IntervalLedger.objects.filter(
        interval=IntervalType.ONE_HOUR,
        needs_rollup=True,
        interval_start_timestamp__lte=config.now - config.grace - HOUR,
    ).values_list("interval_start_timestamp", flat=True)
    touched = plan.hours()
    return sorted(
        hour
        for hour in due
        if hour not in touched and (config.in_range(hour) or not config.reprocess)
    )


def _hour_finish_if_due(run: _Run, hour_start: datetime) -> None:
    if run.config.is_due(hour_start + HOUR):
        _hour_finish(run, hour_start)


def _hour_finish(run: _Run, hour_start: datetime) -> None:
    result = hour_roll_up(hour_start=hour_start, config=run.config, merge=run.merge)
    run.summary.hours_rolled_up += 1
    run.done(result)


def _restated_hours_settle(plan: RunPlan, config: UpdateConfig) -> None:
    """After restating closed hours: a final one drops its fresh states again."""
    for hour_start in sorted(plan.restated):
        if hour_is_final(hour_start, now=config.now, window=config.restate_window):
            hour_states_drop(hour_start=hour_start)
        else:  # states dropped early (pruned hour): every counted file has a state again
            IntervalLedger.objects.filter(
                interval_start_timestamp__gte=hour_start,
                interval_start_timestamp__lt=hour_start + HOUR,
            ).update(states_kept=True)
