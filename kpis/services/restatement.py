"""The restatement window: which hours are closed, files too late for them, and restating them.

An hour is *final* once it ended more than ``KPI_RESTATE_DAYS`` before the run's clock. Its
file states are then dropped (:mod:`kpis.services.retention`), so a new or changed file can no
longer be merged into it: such a file is recorded as ``too_late`` and counted nowhere until the
hour is restated from the raw files with ``--since/--until``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from kpis.models import (
    FileState,
    InputFileRecord,
    InputFileStatus,
    IntervalLedger,
    IntervalType,
)
from kpis.pipeline import HOUR, INTERVAL, InputFile, hour_start_for
from kpis.pipeline.location import InputPath, input_parent, open_input, parse_input_location

logger = logging.getLogger("kpis.update")


def hour_is_final(hour_start: datetime, *, now: datetime, window: timedelta) -> bool:
    """True once the hour ended more than ``window`` before ``now``."""
    return hour_start + HOUR + window < now


def final_hours_before(*, now: datetime, window: timedelta) -> datetime:
    """Hours starting before this moment are final."""
    return now - window - HOUR


def restate_command(hour_start: datetime, *, input_dir: InputPath | None = None) -> str:
    """The command that restates ``hour_start`` from the raw files."""
    command = (
        "python manage.py update_network_stats "
        f"--since {hour_start:%Y-%m-%dT%H:%MZ} --until {hour_start + HOUR:%Y-%m-%dT%H:%MZ}"
    )
    if input_dir is not None and parse_input_location(input_dir) != parse_input_location(
        settings.KPI_INPUT_DIR
    ):
        command += f" --input-dir {input_dir}"
    return command


def _hour_records(hour_start: datetime) -> QuerySet[InputFileRecord]:
    return InputFileRecord.objects.filter(
        interval_start_timestamp__gte=hour_start,
        interval_start_timestamp__lt=hour_start + HOUR,
    )


def hours_closed(hours: Iterable[datetime], *, now: datetime, window: timedelta) -> set[datetime]:
    """Of ``hours``, those already processed that no longer take a late file.

    That is an hour with file records that is final, or whose states were dropped
    anyway (its hourly ledger entry says so, or was pruned). An hour never
    processed is read whole like any new hour, however old.
    """
    closed = set()
    for hour_start in set(hours):
        if not _hour_records(hour_start).exists():
            continue
        if hour_is_final(hour_start, now=now, window=window):
            closed.add(hour_start)
            continue
        kept = (
            IntervalLedger.objects.filter(
                interval=IntervalType.ONE_HOUR, interval_start_timestamp=hour_start
            )
            .values_list("states_kept", flat=True)
            .first()
        )
        if not kept:
            closed.add(hour_start)
    return closed


@dataclass(frozen=True)
class TooLateFile:
    """A new or changed file of a closed hour: recorded, counted nowhere."""

    name: str
    interval_start: datetime

    @property
    def hour_start(self) -> datetime:
        return hour_start_for(self.interval_start)


def file_sha256(path: InputPath) -> str:
    """The sha256 of a file's or object's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open_input(path) as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _ledger_count_too_late(*, start: datetime, interval: IntervalType) -> None:
    end = start + (INTERVAL if interval == IntervalType.FIVE_MINUTES else HOUR)
    hour = (
        IntervalLedger.objects.filter(
            interval=IntervalType.ONE_HOUR, interval_start_timestamp=hour_start_for(start)
        )
        .values_list("states_kept", flat=True)
        .first()
    )
    ledger, _ = IntervalLedger.objects.get_or_create(
        interval=interval,
        interval_start_timestamp=start,
        defaults={"interval_end_timestamp": end, "states_kept": bool(hour)},
    )
    ledger.files_too_late = InputFileRecord.objects.filter(
        interval_start_timestamp__gte=start,
        interval_start_timestamp__lt=end,
        status=InputFileStatus.TOO_LATE,
    ).count()
    ledger.save(update_fields=["files_too_late"])


def too_late_files_record(*, files: list[InputFile]) -> list[TooLateFile]:
    """Record new or changed files of closed hours as ``too_late`` and count them in the ledger.

    A changed file keeps the row figures of the content that was counted (that
    content stays in the KPI rows until the hour is restated); its status and
    fingerprint change, so the next run does not report it again.
    """
    recorded: list[TooLateFile] = []
    by_interval: dict[datetime, list[InputFile]] = defaultdict(list)
    for input_file in files:
        by_interval[input_file.interval_start].append(input_file)
    for start, interval_files in sorted(by_interval.items()):
        with transaction.atomic():
            for input_file in interval_files:
                try:
                    sha256 = file_sha256(input_file.path)
                except FileNotFoundError:
                    logger.warning("file %s disappeared before it could be read", input_file.name)
                    continue
                record = InputFileRecord.objects.filter(name=input_file.name).first()
                if record is None:
                    record = InputFileRecord(name=input_file.name, interval_start_timestamp=start)
                record.sha256 = sha256
                record.size = input_file.size
                record.mtime_ns = input_file.mtime_ns
                record.status = InputFileStatus.TOO_LATE
                record.processed_at = timezone.now()
                record.missing_since = None
                record.save()
                recorded.append(TooLateFile(name=input_file.name, interval_start=start))
                logger.warning(
                    "file %s is too late: its hour %s is final and its file states are "
                    "dropped, so it is counted nowhere; to restate the hour from the raw "
                    "files run: %s",
                    input_file.name,
                    f"{hour_start_for(start):%Y-%m-%dT%H:%MZ}",
                    restate_command(hour_start_for(start), input_dir=input_parent(input_file.path)),
                )
            _ledger_count_too_late(start=start, interval=IntervalType.FIVE_MINUTES)
            _ledger_count_too_late(start=hour_start_for(start), interval=IntervalType.ONE_HOUR)
    return recorded


@dataclass(frozen=True)
class Refusal:
    """A closed hour that cannot be restated: counted files gone together with their states."""

    hour_start: datetime
    missing: list[str]

    def message(self) -> str:
        return (
            f"hour {self.hour_start:%Y-%m-%dT%H:%MZ} cannot be restated: "
            f"{len(self.missing)} counted file(s) are gone from the input folder and their "
            f"states were dropped: {', '.join(self.missing)}"
        )


def restatement_refusals(*, hours: Iterable[datetime], on_disk: set[str]) -> list[Refusal]:
    """The hours whose counted files are not all in the folder or in stored states."""
    refusals = []
    for hour_start in sorted(set(hours)):
        counted = _hour_records(hour_start).filter(status=InputFileStatus.COUNTED)
        gone = {pk: name for pk, name in counted.values_list("pk", "name") if name not in on_disk}
        if not gone:
            continue
        with_state = set(
            FileState.objects.filter(file_id__in=list(gone)).values_list("file_id", flat=True)
        )
        missing = sorted(name for pk, name in gone.items() if pk not in with_state)
        if missing:
            refusals.append(Refusal(hour_start=hour_start, missing=missing))
    return refusals
