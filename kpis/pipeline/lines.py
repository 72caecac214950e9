"""Raw bytes to whole lines: what the parser of :mod:`kpis.pipeline.reader` is given.

The file's bytes are hashed as they are read (the ledger's sha256), cut into
whole lines only (a line end always ends a row, also inside quotes, so a row
never depends on where blocks or byte ranges are cut), rows longer than the
guard's limit are dropped and counted, and bytes that are not UTF-8 are masked
so that the parser never stops on them.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import re
from collections.abc import Iterator
from typing import IO, Any

import numpy as np


def _line_chunks(lines: _RowGuard, size: int) -> Iterator[bytes]:
    """Group the guard's whole lines into pieces of about ``size`` bytes (below ``2 * size``).

    The guard hands out whole lines only, so a piece never splits a row; each
    read of the guard is at most ``size`` (twice its limit of ``size // 2``).
    """
    parts: list[bytes] = []
    length = 0
    while data := lines.read():
        parts.append(data)
        length += len(data)
        if length >= size:
            yield b"".join(parts)
            parts, length = [], 0
    if parts:
        yield b"".join(parts)


# A line (no line end) that ends inside a quoted field, as the parser reads
# quotes: a quote opens a field only at its start; inside, "" is a quote and a
# lone quote closes the field, after which quotes are plain characters. The
# possessive quantifiers keep the regex to that one reading.
_FIELD_THEN_COMMA = rb'(?:"(?:[^"\r\n]|"")*+"[^,\r\n]*+|[^",\r\n][^,\r\n]*+|),'
_OPEN_QUOTE = rb"(?:" + _FIELD_THEN_COMMA + rb')*+"(?:[^"\r\n]|"")*+'
_LINE_ENDING_IN_QUOTE = re.compile(_OPEN_QUOTE + rb"\Z")
_LINES_ENDING_IN_QUOTE = re.compile(rb"(?:(?<=[\r\n])|\A)" + _OPEN_QUOTE + rb"(?=[\r\n]|\Z)")


def _quote_open_at_line_end(piece: bytes, rows: int) -> bool:
    """Whether a quoted field of ``piece`` is still open at the end of its line.

    ``rows`` is how many rows the parser found. It carries an open field over
    the line end and takes the next line in, so that it finds fewer rows than
    there are non-blank lines; the last line takes nothing in and is checked
    by itself. Left alone, such a row would depend on where pieces or byte
    ranges happen to be cut.
    """
    codes = np.frombuffer(piece, dtype=np.uint8)
    ends = (codes == 10) | (codes == 13)
    lines = int(np.count_nonzero(ends[:-1] > ends[1:])) + int(not ends[0])
    if rows != lines:
        return True
    body = piece.rstrip(b"\r\n")
    last = body[max(body.rfind(b"\n"), body.rfind(b"\r")) + 1 :]
    return _LINE_ENDING_IN_QUOTE.match(last) is not None


def _close_quotes_at_line_ends(piece: bytes) -> bytes:
    """``piece`` with a closing quote added to each line that ends inside a quoted field.

    A line end always ends a row, as for the guard and for byte ranges: a
    quoted field still open there ends with its line.
    """
    parts, position = [], 0
    for match in _LINES_ENDING_IN_QUOTE.finditer(piece):
        parts += [piece[position : match.end()], b'"']
        position = match.end()
    parts.append(piece[position:])
    return b"".join(parts)


class _HashingReader(io.RawIOBase):
    """A raw reader that hashes every byte it hands out."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self._digest.update(memoryview(buffer)[:count])
        return count or 0

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _mask_unparsable_bytes(data: bytes) -> bytes:
    """Replace NUL and every byte that is not part of valid UTF-8 by SUB (0x1a), in place.

    The parser mishandles both: it fails the whole file when a row of the
    wrong width is not UTF-8 (it decodes the row to report it), and it misreads
    a quoted field that starts with NUL at a block boundary. SUB keeps the
    same rows bad for the same reasons: an msisdn with a control character is
    invalid, an integer with one is malformed.
    """
    if b"\x00" in data:
        data = data.replace(b"\x00", _MASK)
    if data.isascii():
        return data
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors=_MASK_ERRORS).encode("utf-8")
    return data


def _mask_each_bad_byte(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    return _MASK.decode() * (error.end - error.start), error.end


_MASK = b"\x1a"
_MASK_ERRORS = "kpis-mask-bad-bytes"
codecs.register_error(_MASK_ERRORS, _mask_each_bad_byte)


class _RowGuard:
    """Drop (and report) rows longer than ``limit`` bytes; mask bytes the parser mishandles.

    The CSV parser gives up on the whole file when one row does not fit in a
    block; an oversized row is a bad row, not a bad file. Lines end at CR or
    LF, as for the parser, also inside quotes (see :func:`_close_quotes_at_line_ends`:
    a field does not go on past its line). Only the unfinished
    last line of what was read is held back, so memory stays bounded.
    """

    def __init__(self, source: IO[bytes], *, limit: int, prefix: bytes = b"") -> None:
        self._source = source
        self._limit = limit
        self._prefix = prefix  # bytes already read from ``source``, served first
        # Read by the consumer once the stream is exhausted; only the reading thread writes it.
        self.dropped = 0
        self._held = b""  # the unfinished line, at most ``limit`` bytes
        self._skipping = False  # inside a line already found too long
        self._ready = b""

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of whole, acceptable lines; empty at the end."""
        while not self._ready:
            chunk = self._next_chunk()
            if not chunk:
                if self._skipping:
                    self._skipping = False
                    self._drop()
                tail, self._held = self._held, b""
                if not tail:
                    return b""
                self._ready = _mask_unparsable_bytes(tail)
                break
            self._ready = self._filter(chunk)
        if size < 0 or size >= len(self._ready):
            out, self._ready = self._ready, b""  # the common case: no copy
            return out
        out, self._ready = self._ready[:size], self._ready[size:]
        return out

    def _next_chunk(self) -> bytes:
        # Never more than ``limit`` at a time: a line inside one read then cannot be too long.
        size = min(1024 * 1024 * 4, self._limit)
        if self._prefix:
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            return chunk
        return self._source.read(size)

    def _filter(self, chunk: bytes) -> bytes:
        data = self._held + chunk if self._held else chunk
        last = max(data.rfind(b"\n"), data.rfind(b"\r"))
        if last >= 0 and not self._skipping:
            first = min(end for end in (data.find(b"\n"), data.find(b"\r")) if end >= 0)
            # Lines after the first lie inside this read, which is at most ``limit`` long:
            # only the first can be too long.
            if first <= self._limit:
                self._hold(data[last + 1 :])
                return _mask_unparsable_bytes(data[: last + 1])
        codes = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero((codes == 10) | (codes == 13))
        if not len(ends):
            self._hold(data)
            return b""
        starts = np.concatenate(([0], ends[:-1] + 1))
        lengths = ends - starts
        if self._skipping or (lengths > self._limit).any():
            kept = []
            for start, end, length in zip(starts, ends, lengths, strict=True):
                if self._skipping:
                    self._skipping = False
                    self._drop()
                elif length > self._limit:
                    self._drop()
                else:
                    kept.append(data[start : end + 1])
            complete = b"".join(kept)
        else:
            complete = data[: ends[-1] + 1]
        self._hold(data[ends[-1] + 1 :])
        return _mask_unparsable_bytes(complete)

    def _drop(self) -> None:
        self.dropped += 1

    def _hold(self, tail: bytes) -> None:
        if self._skipping or len(tail) > self._limit:
            self._skipping, self._held = True, b""
        else:
            self._held = tail
