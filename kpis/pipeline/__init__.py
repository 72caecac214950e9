"""The pure part of the service: raw files in, exact KPI state out.

Nothing here imports Django; the data flow is
file -> :func:`read_records` blocks -> :class:`PartialBuilder` -> :class:`Partial`
-> ``top_services`` / ``top_cells``. Persisting and scheduling live in
``kpis.services``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from kpis.pipeline.aggregates import IncompatiblePartial, Partial, PartialBuilder, key_id_for
from kpis.pipeline.files import (
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
from kpis.pipeline.reader import (
    DEFAULT_BLOCK_BYTES,
    REQUIRED_COLUMNS,
    ReadStats,
    Records,
    RejectReason,
    UnreadableFile,
    read_records,
    subscriber_hash_key,
)


@dataclass(slots=True)
class FileOutcome:
    """The result of reading one file: its state, or why it could not be used."""

    partial: Partial | None
    stats: ReadStats
    error: str | None = None


def aggregate_file(
    path: Path,
    *,
    hash_key: str,
    block_size: int = DEFAULT_BLOCK_BYTES,
    on_block: Callable[[], None] | None = None,
) -> FileOutcome:
    """Read one raw file into a :class:`Partial`; an unreadable file gives an error instead.

    Raises ``FileNotFoundError`` if the file disappeared since it was listed.
    """
    # Memory the caller freed since the last file (an hour's states) goes back first.
    _release_free_memory()
    stats = ReadStats()
    builder = PartialBuilder(key_id=key_id_for(hash_key))
    try:
        for records in read_records(
            path, hash_key=hash_key, stats=stats, block_size=block_size, on_block=on_block
        ):
            builder.add(records)
    except UnreadableFile as error:
        return FileOutcome(partial=None, stats=stats, error=str(error))
    finally:
        _release_free_memory()
    return FileOutcome(partial=builder.build(), stats=stats)


def _release_free_memory() -> None:
    """Hand memory freed by a file's blocks back to the OS before the next file.

    Arrow's pool and glibc both keep freed memory for reuse, and reuse by
    arrays of other sizes fragments it: without this, resident memory creeps
    up file after file and hour after hour.
    """
    pa.default_memory_pool().release_unused()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


_M_MMAP_THRESHOLD = -3
# Arrays from this size on get their own mapping, returned to the OS when freed.
_OWN_MAPPING_BYTES = 1024 * 1024


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc, set up so that large arrays never fragment the heap.

    glibc raises its mapping threshold each time a large block is freed, after
    which large arrays come from the heap and their memory stays resident; a
    fixed threshold keeps peak memory flat however many files and hours a run has.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, _OWN_MAPPING_BYTES)
        libc.malloc_trim  # noqa: B018 - glibc only: fails elsewhere
    except (OSError, AttributeError):
        return None
    return libc


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
    "floor_to_interval",
    "hour_start_for",
    "interval_start_for_epoch_ms",
    "key_id_for",
    "parse_file_name",
    "read_records",
    "scan_input_dir",
    "subscriber_hash_key",
]
