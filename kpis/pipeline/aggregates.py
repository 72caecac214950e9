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

from kpis.pipeline.reader import Records, arrow_values, numpy_values

PAIR_SCHEMA = pa.schema([("cell_id", pa.int64()), ("subscriber", pa.uint64())])
_FORMAT_VERSION = "1"
# Pending pairs are deduplicated once they exceed this many rows, so memory
# follows the number of distinct pairs rather than the number of rows read.
_COMPACT_ROWS = 4_000_000
# Below this a block's byte total cannot overflow int64 while being summed.
_SAFE_BLOCK_TOTAL = float(2**62)
# A packed pair holds a subscriber rank below 2**32 and a cell key below 2**31.
_CELL_BITS = 31
_CELL_MASK = 2**_CELL_BITS - 1
_RANK_LIMIT = 2**32
# Service ids below this are summed in a dense array rather than grouped.
_DENSE_SERVICE_IDS = 1 << 20
# Cell ids below this are counted in a dense array rather than sorted.
_DENSE_CELL_IDS = 1 << 22


class IncompatiblePartial(ValueError):
    """Partials made with different subscriber keys or formats cannot be merged."""


def _first_of_runs(values: np.ndarray) -> np.ndarray:
    """For sorted ``values``: True where a value differs from the one before it."""
    first = np.empty(len(values), dtype=bool)
    first[:1] = True
    np.not_equal(values[1:], values[:-1], out=first[1:])
    return first


def _sorted_distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted ``values``: the distinct values and, per value, the index of its distinct."""
    first = _first_of_runs(values)
    rank = np.cumsum(first, dtype=np.int64)
    rank -= 1
    return values[first], rank


def _ranked(subscribers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct subscribers, and the rank of each given subscriber among them."""
    order = np.argsort(subscribers)
    distinct, sorted_rank = _sorted_distinct(subscribers[order])
    rank = np.empty(len(subscribers), dtype=np.int64)
    rank[order] = sorted_rank
    return distinct, rank


def _cell_keys(cell_ids: list[np.ndarray]) -> np.ndarray | None:
    """None when cell ids fit a packed pair as they are; else their sorted distinct values.

    Cell ids that do not fit are packed as their rank among those values.
    """
    if all(len(c) == 0 or (c.min() >= 0 and c.max() <= _CELL_MASK) for c in cell_ids):
        return None
    cells = np.sort(np.concatenate(cell_ids))
    return cells[_first_of_runs(cells)]


def _pack_into(
    out: np.ndarray, rank: np.ndarray, cell_id: np.ndarray, cells: np.ndarray | None
) -> None:
    """Pack (subscriber rank, cell) pairs into ``out``: rank in the high bits, cell below."""
    np.left_shift(rank, _CELL_BITS, out=out, dtype=np.int64)
    out |= cell_id if cells is None else np.searchsorted(cells, cell_id)


def _unpack_distinct(
    packed: np.ndarray, subscribers: np.ndarray, cells: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Sort packed pairs in place; return the distinct ones as (cell_id, subscriber) arrays.

    Ranks order subscribers, so the result is ordered by subscriber.
    """
    packed.sort()
    distinct = packed[_first_of_runs(packed)]
    cell_part = distinct & _CELL_MASK
    return (
        cell_part if cells is None else cells[cell_part],
        subscribers[distinct >> _CELL_BITS],
    )


def _distinct_coded(
    cell_id: np.ndarray, rank: np.ndarray, subscribers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (cell_id, subscribers[rank]) pairs, ordered by subscriber; ``subscribers`` sorted.

    A pair is packed into one int64 so that one sort of plain integers finds
    the distinct pairs, rather than grouping by two columns.
    """
    if len(subscribers) > _RANK_LIMIT:
        raise ValueError("too many distinct subscribers to pack")  # 2**32: far beyond any hour
    cells = _cell_keys([cell_id])
    packed = np.empty(len(cell_id), dtype=np.int64)
    _pack_into(packed, rank, cell_id, cells)
    return _unpack_distinct(packed, subscribers, cells)


def _pair_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    cell_id = numpy_values(table.column("cell_id"))
    subscriber = numpy_values(table.column("subscriber"))
    if len(subscriber) and not (subscriber[1:] >= subscriber[:-1]).all():
        order = np.argsort(subscriber, kind="stable")  # state stored by an older version
        cell_id, subscriber = cell_id[order], subscriber[order]
    return cell_id, subscriber


def _pair_table(cell_id: np.ndarray, subscriber: np.ndarray) -> pa.Table:
    return pa.Table.from_arrays(
        [arrow_values(cell_id, pa.int64()), arrow_values(subscriber, pa.uint64())],
        schema=PAIR_SCHEMA,
    )


def _distinct_pairs(tables: list[pa.Table]) -> pa.Table:
    """The distinct pairs of several pair tables, ordered by subscriber.

    Memory stays near one packed int64 per input pair: each table is packed
    straight into one preallocated array.
    """
    arrays = [_pair_arrays(table) for table in tables if table.num_rows]
    if not arrays:
        return PAIR_SCHEMA.empty_table()
    own_subscribers = [subscriber[_first_of_runs(subscriber)] for _, subscriber in arrays]
    everyone = np.concatenate(own_subscribers)
    everyone.sort()
    everyone = everyone[_first_of_runs(everyone)]
    if len(everyone) > _RANK_LIMIT:
        raise ValueError("too many distinct subscribers to pack")  # 2**32: far beyond any hour
    cells = _cell_keys([cell_id for cell_id, _ in arrays])
    packed = np.empty(sum(len(cell_id) for cell_id, _ in arrays), dtype=np.int64)
    position = 0
    for (cell_id, subscriber), own in zip(arrays, own_subscribers, strict=True):
        # Both lists are sorted, so searchsorted walks ``everyone`` once.
        own_rank = np.searchsorted(everyone, own)
        local = np.cumsum(_first_of_runs(subscriber), dtype=np.int64)
        local -= 1
        segment = packed[position : position + len(cell_id)]
        _pack_into(segment, own_rank[local], cell_id, cells)
        position += len(cell_id)
    return _pair_table(*_unpack_distinct(packed, everyone, cells))


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
        # The pairs of one partial are distinct already.
        pairs = tables[0] if len(tables) == 1 else _distinct_pairs(tables)
        return cls(key_id=key_id, service_bytes=service_bytes, pairs=pairs)

    def top_services(self, n: int) -> list[tuple[int, int]]:
        """The ``n`` services with most bytes, ties to the smaller service_id."""
        ranked = sorted(self.service_bytes.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:n]

    def top_cells(self, n: int) -> list[tuple[int, int]]:
        """The ``n`` cells with most distinct subscribers, ties to the smaller cell_id."""
        cells, counts = self._cell_counts()
        # lexsort's last key is the primary one: most users first, then the smaller cell id.
        ranked = np.lexsort((cells, -counts))[:n]
        return list(zip(cells[ranked].tolist(), counts[ranked].tolist(), strict=True))

    def cell_unique_users(self) -> pa.Table:
        """Distinct subscribers per cell, as a table (cell_id, number_of_unique_users)."""
        cells, counts = self._cell_counts()
        return pa.table(
            {
                "cell_id": arrow_values(cells, pa.int64()),
                "number_of_unique_users": arrow_values(counts, pa.int64()),
            }
        )

    def _cell_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Each cell id that has pairs, sorted, with its number of pairs."""
        cell_id = numpy_values(self.pairs.column("cell_id"))
        if len(cell_id) and cell_id.min() >= 0 and cell_id.max() < _DENSE_CELL_IDS:
            counts = np.bincount(cell_id)
            cells = np.flatnonzero(counts)
            return cells.astype(np.int64), counts[cells].astype(np.int64)
        ordered = np.sort(cell_id)
        starts = np.flatnonzero(_first_of_runs(ordered))
        return ordered[starts], np.diff(np.append(starts, len(ordered))).astype(np.int64)

    @property
    def total_bytes(self) -> int:
        return sum(self.service_bytes.values())

    def to_bytes(self) -> bytes:
        """Serialise for storage: Arrow IPC (LZ4) with the service totals as metadata.

        LZ4 rather than zstd: a little larger, but less than half the time per
        file; sorted subscribers compress either way. Readers accept both.
        """
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
        options = pa.ipc.IpcWriteOptions(compression="lz4")
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
        subscribers, rank = _ranked(records.subscriber_hashes)
        cell_id, subscriber = _distinct_coded(
            records.cell_id, rank[records.subscriber_code], subscribers
        )
        self._pending.append(_pair_table(cell_id, subscriber))
        self._pending_rows += len(cell_id)
        if self._pending_rows > _COMPACT_ROWS and len(self._pending) > 1:
            compacted = _distinct_pairs(self._pending)
            self._pending = [compacted]
            self._pending_rows = compacted.num_rows

    def _add_service_bytes(self, records: Records) -> None:
        totals = self._service_bytes
        service_id, total_bytes = records.service_id, records.total_bytes
        if float(total_bytes.sum(dtype=np.float64)) >= _SAFE_BLOCK_TOTAL:
            # A block this large could wrap int64: add with Python's exact integers.
            for service, total in zip(service_id.tolist(), total_bytes.tolist(), strict=True):
                totals[service] = totals.get(service, 0) + total
            return
        if service_id.min() >= 0 and service_id.max() < _DENSE_SERVICE_IDS:
            seen = np.flatnonzero(np.bincount(service_id))
            sums = np.zeros(int(seen[-1]) + 1, dtype=np.int64)
            np.add.at(sums, service_id, total_bytes)
            services, block_sums = seen.tolist(), sums[seen].tolist()
        else:
            grouped = (
                pa.table(
                    {
                        "service_id": arrow_values(service_id, pa.int64()),
                        "total": arrow_values(total_bytes, pa.int64()),
                    }
                )
                .group_by("service_id")
                .aggregate([("total", "sum")])
            )
            services, block_sums = grouped.column(0).to_pylist(), grouped.column(1).to_pylist()
        for service, total in zip(services, block_sums, strict=True):
            totals[service] = totals.get(service, 0) + total

    def build(self) -> Partial:
        """The exact state of everything added so far."""
        return Partial(
            key_id=self._key_id,
            service_bytes=dict(self._service_bytes),
            pairs=self._pending[0] if len(self._pending) == 1 else _distinct_pairs(self._pending),
        )


def key_id_for(hash_key: str) -> str:
    """A short public fingerprint of the subscriber key, stored beside the state."""
    return hashlib.sha256(("key-id/" + hash_key).encode()).hexdigest()[:16]
