"""Realistic synthetic probe files in the input contract, for demos, tests and benchmarks.

Pure Python (no Django): skewed service and cell popularity, subscribers who
mostly stay near a home cell, heavy-tailed byte counts. Output depends only on
the arguments, so a seed always gives the same files.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from kpis.pipeline import INTERVAL

_MSISDN_BASE = 491_700_000_000


@dataclass(frozen=True)
class Population:
    """The subscribers, cells and services that files are drawn from."""

    subscribers: int
    cells: int
    services: int
    seed: int

    def __post_init__(self) -> None:
        for name in ("subscribers", "cells", "services"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


def _zipf_weights(count: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1, dtype=np.float64) ** exponent
    return weights / weights.sum()


@lru_cache(maxsize=4)
def _home_cells_and_activity(population: Population) -> tuple[np.ndarray, np.ndarray]:
    """Each subscriber's home cell and share of the records; drawn once per population."""
    base = np.random.default_rng(population.seed)
    home_cell = base.choice(
        population.cells, size=population.subscribers, p=_zipf_weights(population.cells, 0.8)
    )
    activity = _zipf_weights(population.subscribers, 0.6)
    base.shuffle(activity)
    return home_cell, activity


def sample_table(population: Population, *, rows: int, stream_seed: list[int]) -> pa.Table:
    """Draw ``rows`` usage records; ``stream_seed`` makes each file differ reproducibly."""
    home_cell, activity = _home_cells_and_activity(population)
    rng = np.random.default_rng([population.seed, *stream_seed])
    subscriber = rng.choice(population.subscribers, size=rows, p=activity)
    # Most records come from the home cell, the rest from a few neighbours.
    roaming = rng.random(rows) < 0.3
    offset = rng.integers(-3, 4, size=rows)
    cell = np.where(
        roaming, (home_cell[subscriber] + offset) % population.cells, home_cell[subscriber]
    )
    service = rng.choice(population.services, size=rows, p=_zipf_weights(population.services, 1.1))
    scale = np.exp(rng.normal(10.0, 2.0, size=rows))
    downlink = np.minimum(scale * rng.uniform(1.0, 8.0, size=rows), 5e11).astype(np.int64)
    uplink = np.minimum(scale * rng.uniform(0.05, 0.5, size=rows), 5e10).astype(np.int64)
    return pa.table(
        {
            "msisdn": pa.array(subscriber + _MSISDN_BASE, pa.int64()).cast(pa.string()),
            "cell_id": pa.array(cell + 1, pa.int64()),
            "service_id": pa.array(service + 1, pa.int64()),
            "bytes_uplink": pa.array(uplink),
            "bytes_downlink": pa.array(downlink),
        }
    )


def file_name(*, interval_start: datetime, part: int, gzipped: bool = False) -> str:
    """The contract's name for part ``part`` of the interval starting at ``interval_start``."""
    closed_ms = int((interval_start + INTERVAL).timestamp() * 1000) + 1000 + part
    return f"network.records-{closed_ms}.{part}.csv" + (".gz" if gzipped else "")


def write_sample_files(
    output_dir: Path,
    *,
    start: datetime,
    intervals: int,
    parts: int,
    rows: int,
    population: Population,
    gzipped: bool = False,
) -> list[Path]:
    """Write ``parts`` files for each of ``intervals`` five-minute intervals from ``start``.

    Files are written under a temporary name and renamed, as a probe would.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(intervals):
        interval_start = start + index * INTERVAL
        stamp = int(interval_start.timestamp()) // 300
        for part in range(parts):
            table = sample_table(population, rows=rows, stream_seed=[stamp, part])
            path = output_dir / file_name(interval_start=interval_start, part=part, gzipped=gzipped)
            temporary = path.with_name(path.name + ".tmp")
            if gzipped:
                with gzip.open(temporary, "wb", compresslevel=1) as handle:
                    pacsv.write_csv(table, handle)
            else:
                pacsv.write_csv(table, temporary)
            temporary.replace(path)
            written.append(path)
    return written


def write_large_file(
    path: Path,
    *,
    rows: int,
    population: Population,
    stream_seed: list[int],
    chunk_rows: int = 500_000,
) -> Path:
    """Write one file of ``rows`` records, drawn and written chunk by chunk in bounded memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    writer: pacsv.CSVWriter | None = None
    try:
        for chunk, offset in enumerate(range(0, rows, chunk_rows)):
            table = sample_table(
                population, rows=min(chunk_rows, rows - offset), stream_seed=[*stream_seed, chunk]
            )
            if writer is None:
                writer = pacsv.CSVWriter(temporary, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    temporary.replace(path)
    return path


def hours_to_intervals(hours: float) -> int:
    return int(timedelta(hours=hours) / INTERVAL)
