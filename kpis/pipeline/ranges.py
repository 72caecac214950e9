"""Work units smaller than a file: byte ranges read apart and merged exactly.

A large file is cut into ranges of its stored bytes, ``[start, end)``. A range
owns the lines that *start* inside it: it skips the line it begins in the middle
of, which belongs to the range before, and reads on past ``end`` to finish its
own last line. Every line is then read by exactly one range, whatever the range
size, so the ranges' partials merged (:meth:`Partial.merge`) and their stats
summed (:meth:`ReadStats.merged`) equal one read of the whole file.

Ranges are cut after a ``b"\\n"``, which ends a row for the whole-file reader
too: it ends a row at every line end (CR or LF), also inside quotes, so no
row spans two ranges. The header is read once (:func:`read_header`) and
handed to every range; the sha256 of the stored bytes is its own task
(:func:`file_digest`), run beside the ranges. A gzip file cannot be entered
in the middle: it is one task, read whole.

Nothing here imports pandas or pyarrow at module level: planning ranges
costs neither.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import IO, cast

from kpis.pipeline import FileOutcome, _aggregate
from kpis.pipeline.files import DEFAULT_BLOCK_BYTES
from kpis.pipeline.location import InputPath, open_input, open_input_part


def byte_ranges(size: int, range_bytes: int) -> list[tuple[int, int]]:
    """``[start, end)`` pieces of ``range_bytes`` covering ``size`` bytes (one if it fits)."""
    if range_bytes <= 0:
        raise ValueError(f"range_bytes must be positive, not {range_bytes}")
    if size <= range_bytes:
        return [(0, size)]
    return [(start, min(start + range_bytes, size)) for start in range(0, size, range_bytes)]


def read_header(path: InputPath) -> bytes:
    """The file's header line (no line end), for every range of it to parse.

    Reads only the start of the file. Raises :class:`UnreadableFile` as a whole
    read would (empty file, no line end within 64 KiB).
    """
    from kpis.pipeline.reader import _open, _read_errors, _split_header

    # The part opener: an object's first look is one small GET, not a read-ahead block.
    with _open(path, open_input_part) as raw, _read_errors(path):
        line, _ = _split_header(cast(IO[bytes], raw))
    return line


def file_digest(path: InputPath) -> str:
    """The sha256 of the file's stored bytes: what a whole read puts in ``stats.sha256``."""
    from kpis.pipeline.reader import _open, _read_errors

    with _open(path, open_input) as raw, _read_errors(path):
        return hashlib.file_digest(cast(io.BufferedReader, raw), "sha256").hexdigest()


def aggregate_range(
    path: InputPath,
    *,
    byte_range: tuple[int, int],
    header: bytes,
    hash_key: str,
    block_size: int = DEFAULT_BLOCK_BYTES,
    on_block: Callable[[], None] | None = None,
) -> FileOutcome:
    """Read the lines that start in ``byte_range`` into a :class:`Partial`, or say why not.

    What :func:`aggregate_file` does for a whole file. ``header`` is the file's
    header line (:func:`read_header`); the range that starts at 0 reads its
    own. The outcome's ``stats.sha256`` is empty. Raises ``FileNotFoundError``
    if the file disappeared, ``ValueError`` for a file that cannot be split
    (see :func:`splittable`).
    """
    return _aggregate(
        path,
        hash_key=hash_key,
        block_size=block_size,
        on_block=on_block,
        byte_range=byte_range,
        header=header,
    )
