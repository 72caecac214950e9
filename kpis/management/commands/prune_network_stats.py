"""Retention: delete old five-minute KPI rows (and, if asked, old hourly ones)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import CommandParser

from kpis.management.arguments import UsageErrorCommand, parse_moment
from kpis.services import RUNS_KEPT_AT_LEAST, kpi_rows_prune, update_runs_prune


def _days(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days of at least 1")
    return int(value)


class Command(UsageErrorCommand):
    help = (
        "Delete five-minute KPI rows and ledger entries older than --keep-days; hourly ones "
        "are kept unless --hourly-keep-days is given, and update runs older than --keep-days "
        f"(the last {RUNS_KEPT_AT_LEAST} stay). Raw-file records are never deleted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--keep-days",
            type=_days,
            required=True,
            help="Keep five-minute rows of the last N days.",
        )
        parser.add_argument(
            "--hourly-keep-days",
            type=_days,
            default=None,
            help="Also delete hourly rows older than M days (M >= N; default: keep them all).",
        )
        parser.add_argument(
            "--now",
            type=parse_moment,
            default=None,
            help="The clock the ages are counted from, ISO 8601 (default: the real time).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        keep, hourly_keep = options["keep_days"], options["hourly_keep_days"]
        if hourly_keep is not None and hourly_keep < keep:
            self.usage_error("--hourly-keep-days must not be shorter than --keep-days")
        now: datetime = options["now"] or datetime.now(UTC)
        counts = kpi_rows_prune(
            five_minute_before=now - timedelta(days=keep),
            hourly_before=None if hourly_keep is None else now - timedelta(days=hourly_keep),
            dry_run=options["dry_run"],
        )
        runs = update_runs_prune(before=now - timedelta(days=keep), dry_run=options["dry_run"])
        if options["verbosity"] >= 1:
            verb = "would delete" if options["dry_run"] else "deleted"
            figures = ", ".join(f"{label}: {count}" for label, count in counts.items())
            kept = "" if hourly_keep is not None else "; hourly rows kept"
            self.stdout.write(
                f"{verb} intervals older than {keep} day(s): {figures}{kept}; update runs: {runs}"
            )
