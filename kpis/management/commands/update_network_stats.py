"""Compute the KPIs of every due five-minute interval and roll up complete hours.

Meant for cron, every five minutes; see crontab.example.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, transaction

from kpis.models import IntervalType
from kpis.pipeline import subscriber_hash_key
from kpis.pipeline.executors import ExecutorConfig, ExecutorFailed, SchedulerUnreachable
from kpis.services import (
    IntervalResult,
    LockBusy,
    Observer,
    RunSummary,
    UpdateConfig,
    network_stats_update,
    run_lock,
)


def parse_moment(value: str) -> datetime:
    """Parse an ISO 8601 time; a time without offset is taken as UTC."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"{value!r} is not an ISO 8601 time, e.g. 2021-07-18T01:05:00Z"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class _ProgressObserver(Observer):
    """Progress bar on a terminal; nothing extra under cron (the log has a line per interval)."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: Any = None

    def planned(self, *, intervals: int) -> None:
        if self._enabled and intervals > 1:
            from tqdm import tqdm

            self._bar = tqdm(total=intervals, unit="interval", file=sys.stderr, leave=False)

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


class Command(BaseCommand):
    # Runs every five minutes under cron: the system checks belong to deployment
    # (`manage.py check --deploy`), not to every run.
    requires_system_checks: list[str] = []
    help = (
        "Read the raw files of every due five-minute interval that is new or changed, store its "
        "KPIs, and roll up every due hour exactly. Exits 1 if a file could not be read."
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
            type=Path,
            default=None,
            help="Folder of raw files (default: KPI_INPUT_DIR).",
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
            help="Recompute intervals starting at or after this time, even if unchanged.",
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

    def handle(self, *args: Any, **options: Any) -> None:
        input_dir: Path = options["input_dir"] or Path(settings.KPI_INPUT_DIR)
        if not input_dir.is_dir():
            raise CommandError(f"input folder {input_dir} does not exist or is not a folder")
        config = UpdateConfig(
            input_dir=input_dir,
            now=options["now"] or datetime.now(UTC),
            top_n=settings.KPI_TOP_N,
            grace=timedelta(seconds=settings.KPI_GRACE_SECONDS),
            hash_key=subscriber_hash_key(settings.KPI_SUBSCRIBER_KEY),
            block_size=settings.KPI_READ_BLOCK_BYTES,
            since=options["since"],
            until=options["until"],
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
            # Not an error: the other run does the work. Cron stays quiet.
            if options["verbosity"] >= 1:
                self.stdout.write(f"{busy}; nothing to do.")
            return
        except DatabaseError as error:
            raise CommandError(f"database error, nothing half-written was kept: {error}") from error
        except (SchedulerUnreachable, ExecutorFailed) as error:
            raise CommandError(str(error)) from error
        finally:
            observer.close()
        prefix = "dry run, nothing stored: " if options["dry_run"] else ""
        if config.reprocess:
            prefix += _range_text(config)
        if options["verbosity"] >= 1:
            self.stdout.write(prefix + summary.line())
        if summary.failures:
            for failure in summary.failures:
                self.stderr.write(f"failed file {failure}")
            raise CommandError(f"{len(summary.failures)} file(s) could not be read", returncode=1)

    def _run(self, config: UpdateConfig, observer: Observer, *, dry_run: bool) -> RunSummary:
        if dry_run:
            with transaction.atomic():
                summary = network_stats_update(config=config, observer=observer)
                transaction.set_rollback(True)
            return summary
        with run_lock(stale_after=timedelta(seconds=settings.KPI_LOCK_STALE_SECONDS)) as beat:
            return network_stats_update(config=config, heartbeat=beat, observer=observer)
