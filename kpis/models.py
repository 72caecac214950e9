"""KPI rows, the processing ledger, and the stored state behind exact roll-ups."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.db.models import Q


class IntervalType(models.IntegerChoices):
    FIVE_MINUTES = 1, "five minutes"
    ONE_HOUR = 2, "one hour"


class KpiRowQuerySet(models.QuerySet[Any]):
    def of_interval(self, *, start: datetime, interval: IntervalType) -> KpiRowQuerySet:
        return self.filter(interval_start_timestamp=start, interval=interval)


class KpiRow(models.Model):
    """One ranked row of a KPI for one interval (five minutes or one hour)."""

    interval_start_timestamp = models.DateTimeField()
    interval_end_timestamp = models.DateTimeField()
    interval = models.PositiveSmallIntegerField(choices=IntervalType.choices)

    objects = KpiRowQuerySet.as_manager()

    # Set by each concrete KPI: the ranked key and the value it is ranked by.
    key_field: str
    value_field: str

    class Meta:
        abstract = True


class ServiceTrafficVolume(KpiRow):
    """KPI 1: the services with most bytes (uplink + downlink)."""

    service_id = models.BigIntegerField()
    total_bytes = models.PositiveBigIntegerField()

    key_field = "service_id"
    value_field = "total_bytes"

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["interval", "interval_start_timestamp", "service_id"],
                name="service_volume_unique_per_interval",
            )
        ]
        indexes = [models.Index(fields=["interval_start_timestamp", "interval"])]

    def __str__(self) -> str:
        return f"service {self.service_id} @ {self.interval_start_timestamp:%Y-%m-%d %H:%M}"


class CellUniqueUsers(KpiRow):
    """KPI 2: the cells with most distinct subscribers."""

    cell_id = models.BigIntegerField()
    number_of_unique_users = models.PositiveIntegerField()

    key_field = "cell_id"
    value_field = "number_of_unique_users"

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["interval", "interval_start_timestamp", "cell_id"],
                name="cell_users_unique_per_interval",
            )
        ]
        indexes = [models.Index(fields=["interval_start_timestamp", "interval"])]
        verbose_name_plural = "cell unique users"

    def __str__(self) -> str:
        return f"cell {self.cell_id} @ {self.interval_start_timestamp:%Y-%m-%d %H:%M}"


class LedgerQuerySet(models.QuerySet["IntervalLedger"]):
    def in_range(
        self, *, start_gte: datetime | None = None, end_lte: datetime | None = None
    ) -> LedgerQuerySet:
        queryset = self
        if start_gte is not None:
            queryset = queryset.filter(interval_start_timestamp__gte=start_gte)
        if end_lte is not None:
            queryset = queryset.filter(interval_end_timestamp__lte=end_lte)
        return queryset


class IntervalLedger(models.Model):
    """What went into one processed interval (five minutes or one hour).

    ``revision`` counts the computations: 1 for the first, +1 for every
    recomputation after a late or changed file.
    """

    interval_start_timestamp = models.DateTimeField()
    interval_end_timestamp = models.DateTimeField()
    interval = models.PositiveSmallIntegerField(choices=IntervalType.choices)
    revision = models.PositiveIntegerField(default=0)
    files_counted = models.PositiveIntegerField(default=0)
    files_failed = models.PositiveIntegerField(default=0)
    files_duplicate = models.PositiveIntegerField(default=0)
    files_missing = models.PositiveIntegerField(default=0)
    # Files that arrived after the interval became final: recorded, counted nowhere.
    files_too_late = models.PositiveIntegerField(default=0)
    # For an hour: how many of its twelve five-minute intervals have been processed.
    intervals_processed = models.PositiveSmallIntegerField(default=0)
    rows_accepted = models.PositiveBigIntegerField(default=0)
    rows_rejected = models.PositiveBigIntegerField(default=0)
    rejects = models.JSONField(default=dict, blank=True)
    needs_rollup = models.BooleanField(default=False)
    processed_at = models.DateTimeField(null=True, blank=True)
    # False once the file states of the interval's hour are dropped (the hour is final):
    # a late file can then no longer be merged, only restated from the raw files.
    states_kept = models.BooleanField(default=True)

    objects = LedgerQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["interval", "interval_start_timestamp"], name="ledger_unique_interval"
            )
        ]
        indexes = [
            models.Index(fields=["interval_start_timestamp", "interval"]),
            models.Index(
                fields=["needs_rollup", "interval_start_timestamp"],
                name="ledger_pending_rollup",
                condition=Q(needs_rollup=True),
            ),
            # Not partial: MySQL ignores conditions, and the lookup of hours whose states
            # are to be dropped must not scan the years of hours already dropped.
            models.Index(
                fields=["states_kept", "interval", "interval_start_timestamp"],
                name="ledger_states_kept",
            ),
        ]
        ordering = ["interval_start_timestamp", "interval"]

    def __str__(self) -> str:
        kind = IntervalType(self.interval).label
        return f"{kind} from {self.interval_start_timestamp:%Y-%m-%d %H:%M}"

    @property
    def is_complete(self) -> bool:
        """All files counted; for an hour, also all twelve intervals present."""
        if self.files_failed or self.files_too_late:
            return False
        if self.interval == IntervalType.ONE_HOUR:
            return self.intervals_processed == 12
        return self.revision > 0

    @property
    def duration(self) -> timedelta:
        return self.interval_end_timestamp - self.interval_start_timestamp


class InputFileStatus(models.TextChoices):
    COUNTED = "counted", "counted"
    FAILED = "failed", "failed"
    DUPLICATE = "duplicate", "duplicate"
    # New or changed after its interval became final: counted nowhere until restated.
    TOO_LATE = "too_late", "too late"


class InputFileRecord(models.Model):
    """The ledger of one raw file: its fingerprint and what became of it."""

    name = models.CharField(max_length=255, unique=True)
    interval_start_timestamp = models.DateTimeField(db_index=True)
    size = models.PositiveBigIntegerField()
    mtime_ns = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=InputFileStatus.choices)
    rows_accepted = models.PositiveBigIntegerField(default=0)
    rows_rejected = models.PositiveBigIntegerField(default=0)
    rejects = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    duplicate_of = models.CharField(max_length=255, blank=True)
    # The revision of its interval that last read this file.
    interval_revision = models.PositiveIntegerField(default=0)
    processed_at = models.DateTimeField()
    # Set when the file is no longer in the input folder; its counts are kept.
    missing_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["interval_start_timestamp", "name"]

    def __str__(self) -> str:
        return self.name


class FileState(models.Model):
    """Where one state of a counted file is kept in the state store (``KPI_STATE_URL``).

    The bytes are a Parquet file in the store (see ``kpis.pipeline.store``); the
    database keeps only this reference. A file read whole has one state (seq 0),
    a file read as byte ranges one per range. Subscribers appear in states only
    as keyed hashes.
    """

    file = models.ForeignKey(InputFileRecord, on_delete=models.CASCADE, related_name="states")
    seq = models.PositiveIntegerField()
    key = models.CharField(max_length=512, unique=True)
    size = models.PositiveBigIntegerField(help_text="Bytes of the stored state.")
    pairs = models.PositiveBigIntegerField(help_text="Distinct (cell, subscriber) pairs in it.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["file", "seq"], name="file_state_unique_slice")
        ]

    def __str__(self) -> str:
        return f"state {self.seq} of file {self.file_id}: {self.key}"


class RunLock(models.Model):
    """A lease that lets only one ``update_network_stats`` run work at a time."""

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name}: {self.holder or 'free'}"


class UpdateRunQuerySet(models.QuerySet["UpdateRun"]):
    def failed(self) -> UpdateRunQuerySet:
        return self.exclude(exit_status=0)

    def newest_first(self) -> UpdateRunQuerySet:
        return self.order_by("-finished_at", "-id")


class UpdateRun(models.Model):
    """One ``update_network_stats`` run, written when it ends, whether it worked or not.

    Runs that found another run working, and dry runs, are not recorded.
    """

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(db_index=True)
    duration_seconds = models.FloatField()
    # The command's exit status: 0, or 1 when a file failed or the run stopped on an error.
    exit_status = models.PositiveSmallIntegerField()
    intervals_processed = models.PositiveIntegerField(default=0)
    files_read = models.PositiveIntegerField(default=0)
    files_failed = models.PositiveIntegerField(default=0)
    rows_accepted = models.PositiveBigIntegerField(default=0)
    rows_rejected = models.PositiveBigIntegerField(default=0)
    hours_rolled_up = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    objects = UpdateRunQuerySet.as_manager()

    class Meta:
        ordering = ["-finished_at", "-id"]

    def __str__(self) -> str:
        return f"run ended {self.finished_at:%Y-%m-%d %H:%M:%S} with exit status {self.exit_status}"
