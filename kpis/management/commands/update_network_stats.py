"""Compute the KPIs of every due five-minute interval and roll up complete hours.

Meant for cron, every five minutes; see crontab.example.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError, transaction

from kpis.management.arguments import UsageErrorCommand, parse_moment
from kpis.models import IntervalType
from kpis.pipeline import subscriber_hash_key
from kpis.pipeline.executors import ExecutorConfig, ExecutorFailed, SchedulerUnreachable
from kpis.pipeline.location import (
    InputUnreachable,
    check_input_location,
    describe_storage_error,
    is_storage_error,
    is_url,
    parse_input_location,
)
from kpis.services import (
    IntervalResult,
    LockBusy,
    Observer,
    RunRecording,
    RunSummary,
    UpdateConfig,
    network_stats_update,
    run_lock,
    state_store,
    update_run_recorded,
)
from kpis.services.restatement import restate_command


def _terminal_size(stream: TextIO) -> os.terminal_size | None:
    """The size the terminal behind ``stream`` reports, or None when it reports none."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):
        return None
    return size if size.columns > 0 and size.lines > 0 else None


class _ProgressObserver(Observer):
    """Progress bar on a terminal; nothing extra under cron (the log has a line per interval)."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: Any = None

    def planned(self, *, intervals: int) -> None:
        if self._enabled and intervals > 1:
            from tqdm import tqdm

            # tqdm draws nothing on a terminal that reports a size of 0x0 (a pseudo-terminal
            # nobody sized yet), so such a terminal gets the classic 80x24.
            sized = _terminal_size(sys.stderr) is not None
            self._bar = tqdm(
                total=intervals,
                unit="interval",
                file=sys.stderr,
                leave=False,
                ncols=None if sized else 79,
                nrows=None if sized else 23,
            )

    def interval_done(self, result: IntervalResult) -> None:
        if self._bar is not None and result.interval == IntervalType.FIVE_MINUTES:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextmanager
def _log_level_for(verbosity: int) -> Iterator[None]:
    """Django's verbosity over the run's logs: 0 = errors only, 1 = as configured, 2+ = debug."""
    kpis_logger = logging.getLogger("kpis")
    previous = kpis_logger.level
    if verbosity == 0:
        kpis_logger.setLevel(max(logging.ERROR, kpis_logger.getEffectiveLevel()))
    elif verbosity >= 2:
        kpis_logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        kpis_logger.setLevel(previous)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is less than 1")
    return number


def _range_text(config: UpdateConfig) -> str:
    since = f"{config.since:%Y-%m-%dT%H:%MZ}" if config.since else "the first file"
    until = f"{config.until:%Y-%m-%dT%H:%MZ}" if config.until else "now"
    return f"re-processed intervals from {since} until {until}: "


class Command(UsageErrorCommand):
    # Runs every five minutes under cron: the system checks belong to deployment
    # (`manage.py check --deploy`), not to every run.
    requires_system_checks: list[str] = []
    help = (
        "Read the raw files of every due five-minute interval that is new or changed, store its "
        "KPIs, and roll up every due hour exactly. Exits 1 if a file could not be read or came "
        "too late for its final hour."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--now",
            type=parse_moment,
            default=None,
            help="The clock to schedule by, ISO 8601 (default: the real time).",
        )
        parser.add_argument(
            "--input-dir",
            type=parse_input_location,
            default=None,
            help="Folder or s3://bucket/prefix/ of raw files (default: KPI_INPUT_DIR).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Do all the work and report it, then roll back: the database is unchanged.",
        )
        parser.add_argument(
            "--since",
            type=parse_moment,
            default=None,
            help=(
                "Recompute intervals starting at or after this time, even if unchanged; final "
                "hours are restated whole from the raw files."
            ),
        )
        parser.add_argument(
            "--until",
            type=parse_moment,
            default=None,
            help="Recompute intervals starting before this time, even if unchanged.",
        )
        parser.add_argument(
            "--workers",
            type=_positive_int,
            default=None,
            help="Read files in this many local worker processes; 1 reads them in this process "
            "(default: KPI_WORKERS). Not used when KPI_DASK_SCHEDULER is set.",
        )
        parser.add_argument(
            "--no-progress",
            action="store_true",
            help="Never show a progress bar, even on a terminal.",
        )

    _run_record: RunRecording

    def execute(self, *args: Any, **options: Any) -> str | None:
        # A usage error is no run: it leaves no record.
        since, until = options.get("since"), options.get("until")
        if since is not None and until is not None and since >= until:
            self.usage_error(
                f"--since {since:%Y-%m-%dT%H:%M:%SZ} is not before --until "
                f"{until:%Y-%m-%dT%H:%M:%SZ}: the range would hold no interval"
            )
        # Every real run leaves a record in the run history, however it ends; a dry run
        # changes nothing, its record included.
        with update_run_recorded(enabled=not options.get("dry_run")) as self._run_record:
            return super().execute(*args, **options)

    def handle(self, *args: Any, **options: Any) -> None:
        input_dir = options["input_dir"] or parse_input_location(settings.KPI_INPUT_DIR)
        try:
            check_input_location(input_dir)
        except InputUnreachable as error:
            raise CommandError(str(error)) from error
        config = UpdateConfig(
            input_dir=input_dir,
            now=options["now"] or datetime.now(UTC),
            top_n=settings.KPI_TOP_N,
            grace=timedelta(seconds=settings.KPI_GRACE_SECONDS),
            hash_key=subscriber_hash_key(settings.KPI_SUBSCRIBER_KEY),
            block_size=settings.KPI_READ_BLOCK_BYTES,
            since=options["since"],
            until=options["until"],
            restate_window=timedelta(days=settings.KPI_RESTATE_DAYS),
            executor=ExecutorConfig(
                workers=options["workers"] or settings.KPI_WORKERS,
                scheduler=settings.KPI_DASK_SCHEDULER,
                connect_timeout=settings.KPI_DASK_CONNECT_SECONDS,
            ),
        )
        observer = _ProgressObserver(
            enabled=sys.stderr.isatty() and options["verbosity"] >= 1 and not options["no_progress"]
        )
        try:
            with _log_level_for(options["verbosity"]):
                summary = self._run(config, observer, dry_run=options["dry_run"])
        except LockBusy as busy:
            # Not an error: the other run does the work (and records itself). Cron stays quiet.
            self._run_record.skip()
            if options["verbosity"] >= 1:
                self.stdout.write(f"{busy}; nothing to do.")
            return
        except DatabaseError as error:
            raise CommandError(f"database error, nothing half-written was kept: {error}") from error
        except (SchedulerUnreachable, ExecutorFailed) as error:
            raise CommandError(str(error)) from error
        except InputUnreachable as error:
            raise CommandError(str(error)) from error
        except Exception as error:
            # The object storage lost in the middle of a run: the interval being
            # written was rolled back with its transaction; the next run redoes it.
            if is_url(input_dir) and is_storage_error(error):
                where = (str(input_dir), "KPI_INPUT_DIR")
            elif is_url(config.state_url) and is_storage_error(error):
                where = (config.state_url, "KPI_STATE_URL")
            else:
                raise
            raise CommandError(
                describe_storage_error(error, *where)
                + "; nothing half-written was kept, the next run completes the work"
            ) from error
        finally:
            observer.close()
        self._run_record.summary = summary
        prefix = "dry run, nothing stored: " if options["dry_run"] else ""
        if config.reprocess:
            prefix += _range_text(config)
        if summary.refused:
            for refusal in summary.refused:
                self.stderr.write(refusal.message())
            raise CommandError(
                f"restatement refused for {len(summary.refused)} hour(s); nothing was changed "
                "(put the missing files back in the input folder, or leave those hours out "
                "of --since/--until)",
                returncode=1,
            )
        if options["verbosity"] >= 1:
            self.stdout.write(prefix + summary.line())
        for late in summary.too_late:
            self.stderr.write(
                f"file {late.name} is too late: its hour {late.hour_start:%Y-%m-%dT%H:%MZ} is "
                f"final (KPI_RESTATE_DAYS={settings.KPI_RESTATE_DAYS}) and it is counted "
                "nowhere; to restate the hour from the raw files run: "
                + restate_command(late.hour_start, input_dir=options["input_dir"])
            )
        problems = []
        if summary.failures:
            for failure in summary.failures:
                self.stderr.write(f"failed file {failure}")
            problems.append(f"{len(summary.failures)} file(s) could not be read")
        if summary.too_late:
            problems.append(f"{len(summary.too_late)} file(s) too late")
        if problems:
            raise CommandError("; ".join(problems), returncode=1)

    def _run(self, config: UpdateConfig, observer: Observer, *, dry_run: bool) -> RunSummary:
        if dry_run:
            # The states it writes go under a prefix of their own, removed at the end.
            scratch = f"dry-run/{uuid.uuid4().hex}"
            config = dataclasses.replace(config, state_prefix=scratch + "/")
            try:
                with transaction.atomic():
                    summary = network_stats_update(config=config, observer=observer)
                    transaction.set_rollback(True)
            finally:
                state_store(config.state_url).delete_prefix(scratch)
            return summary
        with run_lock(stale_after=timedelta(seconds=settings.KPI_LOCK_STALE_SECONDS)) as beat:
            return network_stats_update(config=config, heartbeat=beat, observer=observer)
