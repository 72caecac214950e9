"""What a run reports: each interval's figures, the run's totals, and progress hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from kpis.models import IntervalType
from kpis.services.restatement import Refusal, TooLateFile


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
    # Files in the input folder whose names do not follow the contract.
    files_ignored: int = 0
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
            + (f", files ignored: {self.files_ignored}" if self.files_ignored else "")
            + (f", hours made final: {self.hours_made_final}" if self.hours_made_final else "")
        )


class Observer:
    """Hooks a caller can override to show progress; the default does nothing."""

    def planned(self, *, intervals: int) -> None:
        """Called once with the number of intervals this run will process."""

    def interval_done(self, result: IntervalResult) -> None:
        """Called after each interval (or hour) is committed."""
