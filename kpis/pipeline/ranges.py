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
from collections.abc import Callable, Iterator
from typing import IO, cast

from kpis.pipeline import FileOutcome, _aggregate
from kpis.pipeline.files import DEFAULT_BLOCK_BYTES
from kpis.pipeline.location import (
    OBJECT_READ_BYTES,
    InputPath,
    input_name,
    is_url,
    open_input,
    open_input_part,
)

# The first look for a line end (where a range begins, and past its end) is
# small: lines are short. It doubles while no line end turns up.
_LOOK_BYTES = 64 * 1024
# Reads of a local file's range: the size the reader asks for at a time.
_LOCAL_READ_BYTES = 4 * 1024 * 1024


def byte_ranges(size: int, range_bytes: int) -> list[tuple[int, int]]:
    """``[start, end)`` pieces of ``range_bytes`` covering ``size`` bytes (one if it fits)."""
    if range_bytes <= 0:
        raise ValueError(f"range_bytes must be positive, not {range_bytes}")
    if size <= range_bytes:
        return [(0, size)]
    return [(start, min(start + range_bytes, size)) for start in range(0, size, range_bytes)]


def splittable(path: InputPath) -> bool:
    """Whether a file can be read in byte ranges: not when compressed."""
    return not input_name(path).endswith(".gz")


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


def open_span(path: InputPath, start: int, end: int) -> IO[bytes]:
    """A stream of the bytes of the lines that start in ``[start, end)`` of the file.

    Only that span is read, plus the line the range begins in the middle of
    (up to its end, at most the span) and the rest of the last line.
    """
    raw = open_input_part(path)
    fetch = OBJECT_READ_BYTES if is_url(path) else _LOCAL_READ_BYTES
    return cast(IO[bytes], _SpanStream(raw, _span_chunks(raw, start, end, fetch)))


def _span_chunks(raw: IO[bytes], start: int, end: int, fetch: int) -> Iterator[bytes]:
    """The span's bytes, in chunks of at most ``fetch`` bytes (never empty)."""
    position = start
    at_line_end = True  # whether the last byte yielded (or skipped) ends a line
    if start > 0:
        # The range begins after the first line end at or after start - 1: the line
        # around ``start`` started before it. None before ``end``: no line starts here.
        raw.seek(start - 1)
        position = start - 1
        look = _LOOK_BYTES
        while True:
            if position >= end:
                return
            chunk = raw.read(min(look, end - position))
            if not chunk:
                return
            position += len(chunk)
            newline = chunk.find(b"\n")
            if newline >= 0:
                break
            look = min(look * 2, fetch)
        first = chunk[newline + 1 :]
        if first:
            at_line_end = first.endswith(b"\n")
            yield first
        elif position >= end:
            return  # the line end found was the range's last byte
    while position < end:
        chunk = raw.read(min(fetch, end - position))
        if not chunk:
            return
        position += len(chunk)
        at_line_end = chunk.endswith(b"\n")
        yield chunk
    if at_line_end:
        return
    # Finish the last line, which started before ``end``: it is this range's.
    look = _LOOK_BYTES
    while chunk := raw.read(look):
        newline = chunk.find(b"\n")
        if newline >= 0:
            yield chunk[: newline + 1]
            return
        yield chunk
        look = min(look * 2, fetch)


class _SpanStream(io.RawIOBase):
    """A readable stream over the chunks of a span; closing it closes the file."""

    def __init__(self, raw: IO[bytes], chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._chunks = chunks
        self._chunk = b""
        self._offset = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left if negative); empty at the end."""
        if size is None or size < 0:
            rest = [self._chunk[self._offset :], *self._chunks]
            self._chunk, self._offset = b"", 0
            return b"".join(rest)
        if self._offset >= len(self._chunk):
            self._chunk = next(self._chunks, b"")
            self._offset = 0
        if self._offset == 0 and size >= len(self._chunk):
            out, self._chunk = self._chunk, b""  # the common case: no copy
            return out
        out = self._chunk[self._offset : self._offset + size]
        self._offset += len(out)
        return out

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
