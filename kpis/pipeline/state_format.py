"""The format of a stored state: Parquet, one row group per cell partition.

A state's (cell, subscriber) pairs are cut into ``partitions`` parts by a hash
of the cell id. Within a part, rows are sorted subscriber hashes (delta
encoded), each with the part's cells it was seen in. The service totals, the
subscriber key's id, the format and the rows of each part are in the schema
metadata, so a merge reads exactly the row groups of the parts it merges.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kpis.pipeline.aggregates import READ_THREADS, IncompatiblePartial, Partial, _run_starts

STATE_FORMAT = "3"
# One row per (part, subscriber) with the part's cells it was seen in, as in format 2.
_SCHEMA = pa.schema([("subscriber", pa.uint64()), ("cell_ids", pa.list_(pa.int64()))])
# Fibonacci hashing: multiplying by 2**64 / golden ratio spreads consecutive cell ids
# over the high bits, and is stable across processes, machines and library versions.
_SPREAD = np.uint64(0x9E3779B97F4A7C15)
MAX_PARTITIONS = 1024


def cell_partition(cell_id: np.ndarray, partitions: int) -> np.ndarray:
    """The part (0 .. partitions - 1) of each cell id; ``partitions`` is a power of two."""
    if partitions == 1:
        return np.zeros(len(cell_id), dtype=np.uint16)
    bits = partitions.bit_length() - 1
    with np.errstate(over="ignore"):
        spread = cell_id.astype(np.uint64, copy=False) * _SPREAD
    return (spread >> np.uint64(64 - bits)).astype(np.uint16)


def check_partitions(partitions: int) -> int:
    """``partitions`` if it is a power of two from 1 to :data:`MAX_PARTITIONS`."""
    if not 1 <= partitions <= MAX_PARTITIONS or partitions & (partitions - 1):
        raise ValueError(f"partitions must be a power of two from 1 to {MAX_PARTITIONS}")
    return partitions


def state_bytes(partial: Partial, *, partitions: int) -> bytes:
    """Serialise ``partial`` as Parquet (zstd), one row group per non-empty part.

    Within a part, rows are sorted subscriber hashes (delta-encoded) each with its
    cells; the service totals, the key, the format and the rows of each part are
    in the schema metadata.
    """
    check_partitions(partitions)
    pairs = partial.pairs
    if not pairs["subscriber"].is_monotonic_increasing:  # pairs made here are sorted
        pairs = pairs.sort_values("subscriber", kind="stable")
    cell_id = pairs["cell_id"].to_numpy()
    subscriber = pairs["subscriber"].to_numpy()
    part = cell_partition(cell_id, partitions)
    # A stable sort of small integers is a radix sort: subscribers stay ordered in each part.
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(partitions + 1))
    tables = []
    part_rows = []
    for index in range(partitions):
        rows = order[bounds[index] : bounds[index + 1]]
        if not len(rows):
            part_rows.append(0)
            continue
        table = _part_table(subscriber[rows], cell_id[rows])
        part_rows.append(table.num_rows)
        tables.append(table)
    metadata = {
        b"format": STATE_FORMAT.encode(),
        b"key_id": partial.key_id.encode(),
        b"partitions": str(partitions).encode(),
        b"part_rows": json.dumps(part_rows).encode(),
        # JSON strings keep totals above 2**53 exact.
        b"service_bytes": json.dumps(
            [[str(s), str(t)] for s, t in sorted(partial.service_bytes.items())]
        ).encode(),
    }
    sink = pa.BufferOutputStream()
    schema = _SCHEMA.with_metadata(metadata)
    with pq.ParquetWriter(
        sink,
        schema,
        compression="zstd",
        use_dictionary=False,
        column_encoding={"subscriber": "DELTA_BINARY_PACKED"},
    ) as writer:
        for table in tables:
            # One row group per part, however many rows it has.
            writer.write_table(table.replace_schema_metadata(metadata), row_group_size=len(table))
    return sink.getvalue().to_pybytes()


def _part_table(subscriber: np.ndarray, cell_id: np.ndarray) -> pa.Table:
    starts = np.flatnonzero(_run_starts(subscriber))
    offsets = pa.array(np.append(starts, len(subscriber)), pa.int32())
    cells = pa.ListArray.from_arrays(offsets, pa.array(cell_id))
    return pa.table([pa.array(subscriber[starts]), cells], schema=_SCHEMA)


def state_metadata(parquet: pq.ParquetFile) -> dict[bytes, bytes]:
    metadata = parquet.schema_arrow.metadata or {}
    if metadata.get(b"format", b"").decode() != STATE_FORMAT:
        raise IncompatiblePartial("stored state has an unknown format")
    return metadata


def service_totals_of(metadata: dict[bytes, bytes]) -> pd.Series:
    totals = json.loads(metadata[b"service_bytes"].decode())
    return pd.Series(
        [int(total) for _, total in totals],
        index=pd.Index([int(s) for s, _ in totals], dtype=np.int64, name="service_id"),
        dtype=object,
    )


def _pairs_of(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    cells = table.column("cell_ids").combine_chunks()
    return (
        cells.flatten().to_numpy(),
        np.repeat(table.column("subscriber").to_numpy(), pc.list_value_length(cells).to_numpy()),
    )


def part_pairs(
    parquet: pq.ParquetFile, part: int, partitions: int
) -> tuple[np.ndarray, np.ndarray]:
    """The (cell, subscriber) pairs of one part of an open state."""
    metadata = state_metadata(parquet)
    stored_partitions = int(metadata[b"partitions"])
    if stored_partitions == partitions:
        part_rows = json.loads(metadata[b"part_rows"])
        # Row groups are the non-empty parts, in order.
        group = sum(1 for rows in part_rows[:part] if rows)
        if not part_rows[part]:
            return np.zeros(0, np.int64), np.zeros(0, np.uint64)
        return _pairs_of(parquet.read_row_group(group, use_threads=READ_THREADS))
    # Written with another number of parts: read it whole and keep this part's cells.
    cell_id, subscriber = _pairs_of(parquet.read(use_threads=READ_THREADS))
    keep = cell_partition(cell_id, partitions) == part
    return cell_id[keep], subscriber[keep]


def partial_of(parquet: pq.ParquetFile) -> Partial:
    metadata = state_metadata(parquet)
    cell_id, subscriber = _pairs_of(parquet.read(use_threads=READ_THREADS))
    return Partial(
        key_id=metadata[b"key_id"].decode(),
        service_bytes=service_totals_of(metadata),
        pairs=pd.DataFrame({"cell_id": cell_id, "subscriber": subscriber}),
    )
