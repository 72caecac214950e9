"""Write realistic raw probe files in the input contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from kpis.management.arguments import UsageErrorCommand, parse_moment
from kpis.pipeline import floor_to_interval
from kpis.sampledata import Population, hours_to_intervals, write_sample_files


class Command(UsageErrorCommand):
    help = "Write synthetic probe files (five-minute parts) into the input folder."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--start",
            type=parse_moment,
            default=parse_moment("2021-07-18T00:00:00Z"),
            help="Start of the first interval, ISO 8601 (default 2021-07-18T00:00:00Z).",
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
        written = write_sample_files(
            output_dir,
            start=floor_to_interval(options["start"]),
            intervals=hours_to_intervals(options["hours"]),
            parts=options["parts"],
            rows=options["rows"],
            population=population,
            gzipped=options["gzip"],
        )
        self.stdout.write(f"wrote {len(written)} file(s) to {output_dir}")
