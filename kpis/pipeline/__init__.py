"""The pure part of the service: raw files in, exact KPI state out.

Nothing here imports Django; the data flow is
file -> :func:`read_records` blocks (pyarrow parses and checks) -> :class:`PartialBuilder`
(pandas aggregates) -> :class:`Partial` -> ``top_services`` / ``top_cells``.
Persisting and scheduling live in ``kpis.services``.

Importing this package does not load pandas or pyarrow: the names that need them
are loaded on first use (see ``__getattr__``), so a run with no file to read, which
only lists the folder and compares it with the ledger, never pays for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kpis.pipeline.files import (
    DEFAULT_BLOCK_BYTES,
    HOUR,
    INTERVAL,
    INTERVALS_PER_HOUR,
    InputFile,
    floor_to_interval,
    hour_start_for,
    interval_start_for_epoch_ms,
    parse_file_name,
    scan_input_dir,
)
from kpis.pipeline.keys import key_id_for, subscriber_hash_key
from kpis.pipeline.location import InputPath

if TYPE_CHECKING:
    from kpis.pipeline.aggregates import IncompatiblePartial, Partial, PartialBuilder
    from kpis.pipeline.ranges import (
        aggregate_range,
        byte_ranges,
        file_digest,
        read_header,
    )
    from kpis.pipeline.reader import (
        REQUIRED_COLUMNS,
        ReadStats,
        UnreadableFile,
        read_records,
    )
    from kpis.pipeline.rows import Records, RejectReason
    from kpis.pipeline.spans import splittable

# The names backed by pandas and pyarrow, and the module each comes from.
_LAZY = {
    "IncompatiblePartial": "kpis.pipeline.aggregates",
    "Partial": "kpis.pipeline.aggregates",
    "PartialBuilder": "kpis.pipeline.aggregates",
    "REQUIRED_COLUMNS": "kpis.pipeline.reader",
    "ReadStats": "kpis.pipeline.reader",
    "Records": "kpis.pipeline.rows",
    "RejectReason": "kpis.pipeline.rows",
    "UnreadableFile": "kpis.pipeline.reader",
    "read_records": "kpis.pipeline.reader",
    # Light themselves (pandas and pyarrow load on the first read), but they need FileOutcome.
    "aggregate_range": "kpis.pipeline.ranges",
    "byte_ranges": "kpis.pipeline.ranges",
    "file_digest": "kpis.pipeline.ranges",
    "read_header": "kpis.pipeline.ranges",
    "splittable": "kpis.pipeline.spans",
}


def __getattr__(name: str) -> Any:
    """A name backed by pandas or pyarrow, imported on its first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    """The module's names, the ones not imported yet included."""
    return sorted({*globals(), *_LAZY})


@dataclass(slots=True)
class FileOutcome:
    """The result of reading one file: its state, or why it could not be used."""

    partial: Partial | None
    stats: ReadStats
    error: str | None = None


def aggregate_file(
    path: InputPath,
    *,
    hash_key: str,
    block_size: int = DEFAULT_BLOCK_BYTES,
    on_block: Callable[[], None] | None = None,
) -> FileOutcome:
    """Read one raw file into a :class:`Partial`; an unreadable file gives an error instead.

    Raises ``FileNotFoundError`` if the file disappeared since it was listed.
    """
    return _aggregate(path, hash_key=hash_key, block_size=block_size, on_block=on_block)


def _aggregate(
    path: InputPath,
    *,
    hash_key: str,
    block_size: int,
    on_block: Callable[[], None] | None,
    byte_range: tuple[int, int] | None = None,
    header: bytes | None = None,
) -> FileOutcome:
    import pyarrow as pa

    from kpis.pipeline.aggregates import PartialBuilder
    from kpis.pipeline.reader import ReadStats, UnreadableFile, read_records

    stats = ReadStats()
    builder = PartialBuilder(key_id=key_id_for(hash_key))
    try:
        for records in read_records(
            path,
            hash_key=hash_key,
            stats=stats,
            block_size=block_size,
            on_block=on_block,
            byte_range=byte_range,
            header=header,
        ):
            builder.add(records)
    except UnreadableFile as error:
        return FileOutcome(partial=None, stats=stats, error=str(error))
    finally:
        # Arrow's pool keeps a file's freed blocks for reuse; measured on the
        # benchmark hour, handing them back lowers peak memory by about 10 %.
        pa.default_memory_pool().release_unused()
    return FileOutcome(partial=builder.build(), stats=stats)


__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "HOUR",
    "INTERVAL",
    "INTERVALS_PER_HOUR",
    "REQUIRED_COLUMNS",
    "FileOutcome",
    "IncompatiblePartial",
    "InputFile",
    "Partial",
    "PartialBuilder",
    "ReadStats",
    "Records",
    "RejectReason",
    "UnreadableFile",
    "aggregate_file",
    "aggregate_range",
    "byte_ranges",
    "file_digest",
    "floor_to_interval",
    "hour_start_for",
    "interval_start_for_epoch_ms",
    "key_id_for",
    "parse_file_name",
    "read_header",
    "read_records",
    "scan_input_dir",
    "splittable",
    "subscriber_hash_key",
]
