"""Write realistic raw probe files in the input contract."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from kpis.management.arguments import UsageErrorCommand, parse_moment
from kpis.pipeline import INTERVAL, floor_to_interval
from kpis.sampledata import Population, hours_to_intervals, write_sample_files


def parse_end(value: str) -> datetime:
    """``now``: the end of the last interval due now (KPI_GRACE_SECONDS ago); else ISO 8601."""
    if value.strip().lower() == "now":
        return datetime.now(UTC) - timedelta(seconds=settings.KPI_GRACE_SECONDS)
    return parse_moment(value)


class Command(UsageErrorCommand):
    help = "Write synthetic probe files (five-minute parts) into the input folder."

    def add_arguments(self, parser: CommandParser) -> None:
        # Fixed dates by default, so that tests and benchmarks are reproducible; --end now
        # gives data that looks live (make demo).
        when = parser.add_mutually_exclusive_group()
        when.add_argument(
            "--start",
            type=parse_moment,
            default=parse_moment("2021-07-18T00:00:00Z"),
            help="Start of the first interval, ISO 8601 (default 2021-07-18T00:00:00Z).",
        )
        when.add_argument(
            "--end",
            type=parse_end,
            default=None,
            help=(
                "End of the last interval instead of --start, ISO 8601, or 'now': the last "
                "interval that update_network_stats would process now, so that the data is "
                "fresh (health 200, hours not yet final). The data covers --hours before it."
            ),
        )
        parser.add_argument("--hours", type=float, default=3, help="Hours of data (default 3).")
        parser.add_argument("--parts", type=int, default=1, help="Files per interval (default 1).")
        parser.add_argument(
            "--rows", type=int, default=20_000, help="Rows per file (default 20000)."
        )
        parser.add_argument(
            "--subscribers", type=int, default=20_000, help="Distinct msisdn values."
        )
        parser.add_argument("--cells", type=int, default=500, help="Distinct cell ids.")
        parser.add_argument("--services", type=int, default=30, help="Distinct service ids.")
        parser.add_argument(
            "--seed", type=int, default=1, help="Random seed (same seed, same files)."
        )
        parser.add_argument("--gzip", action="store_true", help="Write .csv.gz files.")
        parser.add_argument(
            "--output-dir", type=Path, default=None, help="Target folder (default KPI_INPUT_DIR)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["output_dir"] is None and isinstance(settings.KPI_INPUT_DIR, str):
            raise CommandError(
                f"KPI_INPUT_DIR={settings.KPI_INPUT_DIR} is a bucket: sample data is written to "
                "a folder, so pass --output-dir (then upload the files)"
            )
        output_dir: Path = options["output_dir"] or Path(settings.KPI_INPUT_DIR)
        population = Population(
            subscribers=options["subscribers"],
            cells=options["cells"],
            services=options["services"],
            seed=options["seed"],
        )
        intervals = hours_to_intervals(options["hours"])
        if options["end"] is not None:
            start = floor_to_interval(options["end"]) - intervals * INTERVAL
        else:
            start = floor_to_interval(options["start"])
        written = write_sample_files(
            output_dir,
            start=start,
            intervals=intervals,
            parts=options["parts"],
            rows=options["rows"],
            population=population,
            gzipped=options["gzip"],
        )
        end = start + intervals * INTERVAL
        self.stdout.write(
            f"wrote {len(written)} file(s) to {output_dir}, intervals from "
            f"{start:%Y-%m-%dT%H:%MZ} to {end:%Y-%m-%dT%H:%MZ}"
        )
