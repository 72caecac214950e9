"""Reading a run's files in byte ranges: the same database as reading them whole.

A plain file larger than ``KPI_READ_RANGE_BYTES`` is read as several tasks,
each writing the state of its range; a gzip file stays one task. What the run
stores (KPI rows, ledger, file records with their sha256 and rejects) does not
depend on the range size.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import pytest

from kpis.models import FileState, InputFileRecord
from kpis.sampledata import Population, file_name, write_sample_files
from kpis.tests.conftest import InputFolder, RunResult, utc
from kpis.tests.faults import database_clear, database_snapshot

pytestmark = pytest.mark.django_db

START = utc("2021-07-18T00:00")
NOW = "2021-07-18T01:10Z"


def mixed_files(folder: InputFolder) -> None:
    """Plain and gzip files, with quoted fields, CRLF line ends, a BOM and bad rows."""
    write_sample_files(
        folder.path,
        start=START,
        intervals=3,
        parts=2,
        rows=2_000,
        population=Population(subscribers=300, cells=20, services=8, seed=5),
    )
    lines = ["\ufeffmsisdn,cell_id,service_id,bytes_uplink,bytes_downlink"]
    for n in range(3_000):
        cell = f'"{n % 17}"' if n % 5 == 0 else str(n % 17)
        lines.append(f"4917{n % 400:05d},{cell},{n % 6},{n},{2 * n}")
        if n % 250 == 0:
            lines.append(f'4917{n:05d},"not, a cell",1,1,1')  # a bad row, quoted comma inside
        if n % 333 == 0:
            lines.append(f"4917{n:05d},3,1,-5,1")  # a negative byte count
    crlf = ("\r\n".join(lines)).encode()  # and no line end after the last row
    folder.write_raw(file_name(interval_start=utc("2021-07-18T00:15"), part=0), crlf)
    folder.write_raw(
        file_name(interval_start=utc("2021-07-18T00:15"), part=1, gzipped=True),
        gzip.compress(("\n".join(lines[:2_000]) + "\n").encode()),
    )


def test_files_read_in_ranges_store_what_files_read_whole_store(
    input_folder: InputFolder, run_update: Callable[..., RunResult], settings: Any
) -> None:
    mixed_files(input_folder)
    settings.KPI_READ_RANGE_BYTES = 1 << 30
    whole = run_update(NOW)
    assert whole.exit_code == 0, whole.stderr
    expected = database_snapshot()
    assert FileState.objects.filter(seq__gt=0).count() == 0
    database_clear()

    settings.KPI_READ_RANGE_BYTES = 4096
    in_ranges = run_update(NOW)

    assert in_ranges.exit_code == 0, in_ranges.stderr
    got = database_snapshot()
    for table in ("service_rows", "cell_rows", "ledger", "files"):
        assert got[table] == expected[table], table
    assert InputFileRecord.objects.filter(rows_rejected__gt=0).exists()
    plain = FileState.objects.filter(
        file__name=file_name(interval_start=utc("2021-07-18T00:15"), part=0)
    )
    assert plain.count() > 5  # the CRLF file was read as ranges
    gzipped = file_name(interval_start=utc("2021-07-18T00:15"), part=1, gzipped=True)
    assert FileState.objects.filter(file__name=gzipped).count() == 1  # one task, read whole
