"""The bytes of a byte range: the lines that start in ``[start, end)`` of a file.

A range owns the lines that *start* inside it: it skips the line it begins in
the middle of, which belongs to the range before, and reads on past ``end`` to
finish its own last line. Only that span is fetched (one ranged read per block
of an object). Used by the reader for a range, and planned by
:mod:`kpis.pipeline.ranges`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import IO, cast

from kpis.pipeline.location import (
    OBJECT_READ_BYTES,
    InputPath,
    input_name,
    is_url,
    open_input_part,
)

# The first look for a line end (where a range begins, and past its end) is
# small: lines are short. It doubles while no line end turns up.
_LOOK_BYTES = 64 * 1024
# Reads of a local file's range: the size the reader asks for at a time.
_LOCAL_READ_BYTES = 4 * 1024 * 1024


def splittable(path: InputPath) -> bool:
    """Whether a file can be read in byte ranges: not when compressed."""
    return not input_name(path).endswith(".gz")


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
