"""The run history: every ``update_network_stats`` run records how it ended.

The command runs under cron, not in the web process; its record in the
database is what ``/metrics`` reads at scrape time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.management.base import CommandError
from django.db import Error as DatabaseLayerError
from django.utils import timezone

from kpis.models import UpdateRun
from kpis.services.summary import RunSummary

logger = logging.getLogger("kpis.runs")

# However old, the newest runs stay, so that the last run is always known.
RUNS_KEPT_AT_LEAST = 100
# Python's own exit status after an unhandled Ctrl-C (128 + SIGINT).
_INTERRUPTED = 130


@dataclass
class RunRecording:
    """What the run tells its record while it works; see :func:`update_run_recorded`."""

    enabled: bool = True
    started_at: datetime = field(default_factory=timezone.now)
    started: float = field(default_factory=time.monotonic)
    summary: RunSummary | None = None

    def skip(self) -> None:
        """This run did no work (another run holds the lock): leave no record."""
        self.enabled = False


def _exit_status_of(error: BaseException) -> int:
    if isinstance(error, CommandError):
        return error.returncode
    if isinstance(error, SystemExit):
        return error.code if isinstance(error.code, int) else 1
    if isinstance(error, KeyboardInterrupt):
        return _INTERRUPTED
    return 1


def _message_of(error: BaseException) -> str:
    if isinstance(error, CommandError):
        return str(error)
    return f"{type(error).__name__}: {error}".rstrip(": ")


@contextmanager
def update_run_recorded(*, enabled: bool = True) -> Iterator[RunRecording]:
    """Time the enclosed run and record it when it ends, with its exit status and error.

    The exception, if any, propagates unchanged; a record that cannot be written (the
    database is down) is logged and does not hide the run's own error.
    """
    recording = RunRecording(enabled=enabled)
    try:
        yield recording
    except BaseException as error:
        _record(recording, exit_status=_exit_status_of(error), error=_message_of(error))
        raise
    _record(recording, exit_status=0, error="")


def _record(recording: RunRecording, *, exit_status: int, error: str) -> None:
    if not recording.enabled:
        return
    summary = recording.summary
    if error and summary is not None and summary.failures:
        error = "\n".join([error, *summary.failures])
    try:
        update_run_record(
            started_at=recording.started_at,
            duration=timedelta(seconds=time.monotonic() - recording.started),
            exit_status=exit_status,
            summary=summary,
            error=error,
        )
    except DatabaseLayerError as db_error:
        logger.error("could not record this run in the run history: %s", db_error)


def update_run_record(
    *,
    started_at: datetime,
    duration: timedelta,
    exit_status: int,
    summary: RunSummary | None,
    error: str = "",
) -> UpdateRun:
    """Store one finished run: when, how long, its exit status, its figures and error."""
    figures = summary or RunSummary()
    return UpdateRun.objects.create(
        started_at=started_at,
        finished_at=started_at + duration,
        duration_seconds=duration.total_seconds(),
        exit_status=exit_status,
        intervals_processed=figures.intervals_processed,
        files_read=figures.files_read,
        files_failed=figures.files_failed,
        rows_accepted=figures.rows_accepted,
        rows_rejected=figures.rows_rejected,
        hours_rolled_up=figures.hours_rolled_up,
        error=error,
    )


def update_runs_prune(
    *, before: datetime, keep_at_least: int = RUNS_KEPT_AT_LEAST, dry_run: bool = False
) -> int:
    """Delete the runs that ended at or before ``before``, except the newest ``keep_at_least``.

    Returns how many were deleted (or, in a dry run, would be).
    """
    newest = list(UpdateRun.objects.newest_first().values_list("id", flat=True)[:keep_at_least])
    old = UpdateRun.objects.filter(finished_at__lte=before).exclude(id__in=newest)
    return old.count() if dry_run else old.delete()[0]
