"""Choosing a run's work: which files to read, for which intervals, and what is refused.

A normal run reads the due files that are new or changed since they were read,
and takes the other files of their intervals from the ledger; files of hours
already closed are recorded as too late. A ``--since/--until`` run re-reads
every due file in its range, and every file of a closed hour it touches.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from kpis.models import InputFileRecord
from kpis.pipeline import InputFile, hour_start_for
from kpis.pipeline.location import input_join
from kpis.services.config import UpdateConfig
from kpis.services.folder import FolderListing
from kpis.services.restatement import (
    Refusal,
    TooLateFile,
    file_sha256,
    hours_closed,
    restatement_refusals,
    too_late_files_record,
)

logger = logging.getLogger("kpis.update")


@dataclass
class RunPlan:
    """The work of one run, decided before anything is read."""

    # Every listed file of the intervals the run processes (read or not).
    on_disk: list[InputFile] = field(default_factory=list)
    # The files to read.
    dirty: list[InputFile] = field(default_factory=list)
    # Closed hours a --since/--until run restates whole.
    restated: set[datetime] = field(default_factory=set)
    too_late: list[TooLateFile] = field(default_factory=list)
    # A restatement refused as a whole: the run changes nothing.
    refused: list[Refusal] = field(default_factory=list)

    def batches(self) -> list[tuple[datetime, list[InputFile]]]:
        """The files to read, interval by interval, in time order."""
        by_interval: dict[datetime, list[InputFile]] = defaultdict(list)
        for input_file in self.dirty:
            by_interval[input_file.interval_start].append(input_file)
        return sorted(by_interval.items())

    def on_disk_of(self, start: datetime) -> list[InputFile]:
        return [f for f in self.on_disk if f.interval_start == start]

    def hours(self) -> set[datetime]:
        """The hours whose intervals this run processes."""
        return {hour_start_for(f.interval_start) for f in self.dirty}


def run_plan(listing: FolderListing, config: UpdateConfig) -> RunPlan:
    """What this run reads, given the folder's listing and the ledger."""
    if config.reprocess:
        due = listing.input_files(listing.due(listing.stats, due_before=config.now - config.grace))
        on_disk, restated = _restatement_select(due, config)
        refused = restatement_refusals(hours=restated, on_disk={f.name for f in due})
        if refused:
            return RunPlan(refused=refused)  # all or nothing
        return RunPlan(on_disk=on_disk, dirty=on_disk, restated=restated)
    # Only the intervals with new or changed files are looked at further.
    dirty_names = _dirty_files(listing, config)
    on_disk = listing.input_files(listing.same_intervals(dirty_names))
    dirty = [f for f in on_disk if f.name in dirty_names]
    closed = hours_closed(
        {hour_start_for(f.interval_start) for f in dirty},
        now=config.now,
        window=config.restate_window,
    )
    too_late = too_late_files_record(
        files=[f for f in dirty if hour_start_for(f.interval_start) in closed]
    )
    return RunPlan(
        on_disk=on_disk,
        dirty=[f for f in dirty if hour_start_for(f.interval_start) not in closed],
        too_late=too_late,
    )


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


def _restatement_select(
    due: list[InputFile], config: UpdateConfig
) -> tuple[list[InputFile], set[datetime]]:
    """The files a ``--since/--until`` run re-reads, and the closed hours it restates.

    A closed hour (final, or its states dropped) has no states to merge with: it is
    restated whole, every file of the hour re-read even outside the range.
    """
    in_range = [f for f in due if config.in_range(f.interval_start)]
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
        if config.in_range(f.interval_start) or hour_start_for(f.interval_start) in closed
    ]
    return selected, closed
