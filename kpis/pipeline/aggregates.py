"""Mergeable KPI state: what a set of records contributes to both KPIs.

A :class:`Partial` holds the exact byte total of every service and the
distinct (cell, subscriber) pairs. Partials of files merge into an interval
and partials of intervals into an hour without loss, which is what makes the
hourly KPIs exact: a subscriber seen in several files of an hour is one pair.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from kpis.pipeline.reader import Records

PAIR_SCHEMA = pa.schema([("cell_id", pa.int64()), ("subscriber", pa.uint64())])
_FORMAT_VERSION = "1"
# Pending pairs are deduplicated once they exceed this many rows, so memory
# follows the number of distinct pairs rather than the number of rows read.
_COMPACT_ROWS = 4_000_000
# Below this a block's byte total cannot overflow int64 while being summed.
_SAFE_BLOCK_TOTAL = float(2**62)


class IncompatiblePartial(ValueError):
    """Partials made with different subscriber keys or formats cannot be merged."""


def _distinct_pairs(tables: list[pa.Table]) -> pa.Table:
    if not tables:
        return PAIR_SCHEMA.empty_table()
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return table.group_by(["cell_id", "subscriber"], use_threads=True).aggregate([])


@dataclass
class Partial:
    """Exact, mergeable KPI state of some records."""

    key_id: str
    service_bytes: dict[int, int] = field(default_factory=dict)
    pairs: pa.Table = field(default_factory=PAIR_SCHEMA.empty_table)

    @classmethod
    def merge(cls, partials: Iterable[Partial], *, key_id: str) -> Partial:
        """Combine partials into one, as if their records had been read together."""
        service_bytes: dict[int, int] = {}
        tables = []
        for partial in partials:
            if partial.key_id != key_id:
                raise IncompatiblePartial(
                    "stored subscriber state was made with another KPI_SUBSCRIBER_KEY"
                )
            for service_id, total in partial.service_bytes.items():
                service_bytes[service_id] = service_bytes.get(service_id, 0) + total
            if partial.pairs.num_rows:
                tables.append(partial.pairs)
        return cls(key_id=key_id, service_bytes=service_bytes, pairs=_distinct_pairs(tables))

    def top_services(self, n: int) -> list[tuple[int, int]]:
        """The ``n`` services with most bytes, ties to the smaller service_id."""
        ranked = sorted(self.service_bytes.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:n]

    def top_cells(self, n: int) -> list[tuple[int, int]]:
        """The ``n`` cells with most distinct subscribers, ties to the smaller cell_id."""
        ranked = self.cell_unique_users().sort_by(
            [("number_of_unique_users", "descending"), ("cell_id", "ascending")]
        )
        return _to_pairs(ranked.slice(0, n))

    def cell_unique_users(self) -> pa.Table:
        """Distinct subscribers per cell, as a table (cell_id, number_of_unique_users)."""
        counted = self.pairs.group_by("cell_id").aggregate([("subscriber", "count")])
        return counted.rename_columns(["cell_id", "number_of_unique_users"])

    @property
    def total_bytes(self) -> int:
        return sum(self.service_bytes.values())

    def to_bytes(self) -> bytes:
        """Serialise for storage: Arrow IPC (zstd) with the service totals as metadata."""
        metadata = {
            b"format": _FORMAT_VERSION.encode(),
            b"key_id": self.key_id.encode(),
            # JSON strings keep totals above 2**53 exact.
            b"service_bytes": json.dumps(
                [[str(s), str(t)] for s, t in sorted(self.service_bytes.items())]
            ).encode(),
        }
        table = self.pairs.cast(PAIR_SCHEMA).replace_schema_metadata(metadata)
        sink = pa.BufferOutputStream()
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Partial:
        """Inverse of :meth:`to_bytes`."""
        with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
            table = reader.read_all()
        metadata = table.schema.metadata or {}
        if metadata.get(b"format") != _FORMAT_VERSION.encode():
            raise IncompatiblePartial("stored partial has an unknown format")
        service_bytes = {
            int(service): int(total)
            for service, total in json.loads(metadata[b"service_bytes"].decode())
        }
        return cls(
            key_id=metadata[b"key_id"].decode(),
            service_bytes=service_bytes,
            pairs=table.replace_schema_metadata(None),
        )


def _to_pairs(table: pa.Table) -> list[tuple[int, int]]:
    return list(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))


class PartialBuilder:
    """Accumulates record blocks into a :class:`Partial` in bounded memory."""

    def __init__(self, *, key_id: str) -> None:
        self._key_id = key_id
        self._service_bytes: dict[int, int] = {}
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def add(self, records: Records) -> None:
        """Fold one validated block into the state."""
        self._add_service_bytes(records)
        pairs = pa.table(
            {
                "cell_id": pa.array(records.cell_id, pa.int64()),
                "subscriber": pa.array(records.subscriber, pa.uint64()),
            }
        )
        distinct = _distinct_pairs([pairs])
        self._pending.append(distinct)
        self._pending_rows += distinct.num_rows
        if self._pending_rows > _COMPACT_ROWS and len(self._pending) > 1:
            compacted = _distinct_pairs(self._pending)
            self._pending = [compacted]
            self._pending_rows = compacted.num_rows

    def _add_service_bytes(self, records: Records) -> None:
        totals = self._service_bytes
        if float(records.total_bytes.sum(dtype=np.float64)) < _SAFE_BLOCK_TOTAL:
            grouped = (
                pa.table({"service_id": records.service_id, "total": records.total_bytes})
                .group_by("service_id")
                .aggregate([("total", "sum")])
            )
            services = grouped.column(0).to_pylist()
            sums = grouped.column(1).to_pylist()
        else:  # a block this large could wrap int64: add with Python's exact integers
            services, sums = records.service_id.tolist(), records.total_bytes.tolist()
        for service_id, total in zip(services, sums, strict=True):
            totals[service_id] = totals.get(service_id, 0) + total

    def build(self) -> Partial:
        """The exact state of everything added so far."""
        return Partial(
            key_id=self._key_id,
            service_bytes=dict(self._service_bytes),
            pairs=_distinct_pairs(self._pending),
        )


def key_id_for(hash_key: str) -> str:
    """A short public fingerprint of the subscriber key, stored beside the state."""
    return hashlib.sha256(("key-id/" + hash_key).encode()).hexdigest()[:16]
