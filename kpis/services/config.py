"""What one ``update_network_stats`` run is told: built by the command from settings and options."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings

from kpis.pipeline.executors import ExecutorConfig
from kpis.pipeline.location import InputPath


def _state_url() -> str:
    return str(settings.KPI_STATE_URL)


def _state_partitions() -> int:
    return int(settings.KPI_STATE_PARTITIONS)


def _range_bytes() -> int:
    return int(settings.KPI_READ_RANGE_BYTES)


@dataclass(frozen=True)
class UpdateConfig:
    """Everything one run needs to know."""

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
    # KPI_STATE_URL: the state store every task writes to and reads from.
    state_url: str = field(default_factory=_state_url)
    # KPI_STATE_PARTITIONS: cell partitions of each state, merged independently.
    partitions: int = field(default_factory=_state_partitions)
    # KPI_READ_RANGE_BYTES: a larger plain file is read as byte ranges of this size.
    range_bytes: int = field(default_factory=_range_bytes)
    # Put before every key this run writes: a dry run writes under a scratch prefix that it
    # removes at the end, out of the way of the hours' folders that real runs sweep.
    state_prefix: str = ""

    @property
    def reprocess(self) -> bool:
        """A range was named: recompute it from its files even if nothing changed."""
        return self.since is not None or self.until is not None

    def is_due(self, end: datetime) -> bool:
        """Whether an interval or hour ending at ``end`` is complete by now (grace included)."""
        return self.now >= end + self.grace

    def in_range(self, start: datetime) -> bool:
        """Whether ``start`` is within ``--since/--until`` (always, when none was named)."""
        if self.since is not None and start < self.since:
            return False
        return self.until is None or start < self.until
