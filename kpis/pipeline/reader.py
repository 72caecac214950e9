"""Stream one raw CSV file into validated record batches.

A file is parsed in blocks of bounded size by pyarrow, every column as raw
bytes, and each block is validated with vectorised kernels: a bad row is
counted under its reason and dropped, the rest goes on. Only a file that
cannot be parsed at all raises :class:`UnreadableFile`.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import io
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import IO, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from kpis.pipeline.files import DEFAULT_BLOCK_BYTES
from kpis.pipeline.lines import (
    _close_quotes_at_line_ends,
    _HashingReader,
    _line_chunks,
    _quote_open_at_line_end,
    _RowGuard,
)
from kpis.pipeline.location import InputPath, input_name, is_storage_error, is_url, open_input
from kpis.pipeline.rows import _REASONS, Records, RejectReason, _validate

REQUIRED_COLUMNS = ("msisdn", "cell_id", "service_id", "bytes_uplink", "bytes_downlink")
_HEADER_LIMIT = 64 * 1024
# Each piece of a file is parsed in sub-blocks of this size, in parallel.
_PARSE_BLOCK_BYTES = 64 * 1024 * 1024


class UnreadableFile(Exception):
    """The file as a whole cannot be used; the message says why."""


@dataclass(slots=True)
class ReadStats:
    """What reading one file found: accepted rows, rejects by reason, content hash."""

    rows_accepted: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    sha256: str = ""

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejects.values())

    @classmethod
    def merged(cls, parts: Iterable[ReadStats], *, sha256: str = "") -> ReadStats:
        """The stats of a file read in byte ranges: the ranges' counts summed, and its hash.

        Every row lies in exactly one range, so the sums equal what one read of
        the whole file counts; ``sha256`` comes from :func:`file_digest` (ranges
        do not hash).
        """
        total = cls(sha256=sha256)
        for part in parts:
            total.rows_accepted += part.rows_accepted
            total.rejects.update(part.rejects)
        return total


def read_records(
    path: InputPath,
    *,
    hash_key: str,
    stats: ReadStats,
    block_size: int = DEFAULT_BLOCK_BYTES,
    on_block: Callable[[], None] | None = None,
    byte_range: tuple[int, int] | None = None,
    header: bytes | None = None,
) -> Iterator[Records]:
    """Yield the valid rows of ``path`` block by block, counting rejects in ``stats``.

    ``stats.sha256`` is the hash of the file's bytes as stored, complete once
    the iterator is exhausted. Raises :class:`UnreadableFile` when the file
    cannot be parsed (missing column, not CSV, broken gzip).

    With ``byte_range=(start, end)`` only the lines that start in that span of
    the stored bytes are read (see :mod:`kpis.pipeline.ranges`), and
    ``stats.sha256`` stays empty. A range that does not start at 0 takes its
    columns from ``header``, the file's header line as :func:`read_header` gives it.
    """
    if byte_range is not None:
        yield from _read_range(path, byte_range, header, hash_key, stats, block_size, on_block)
        return
    with _open(path, open_input) as raw:
        hashing = _HashingReader(raw)
        buffered = io.BufferedReader(hashing, buffer_size=1024 * 1024)
        stream = cast(
            IO[bytes],
            gzip.GzipFile(fileobj=buffered, mode="rb")
            if input_name(path).endswith(".gz")
            else buffered,
        )
        with _read_errors(path):
            yield from _read_stream(stream, hash_key, stats, block_size, on_block)
            # Drain what the parser did not need, so that the hash covers the whole file.
            while stream.read(1024 * 1024):
                pass
        stats.sha256 = hashing.hexdigest()


def _read_range(
    path: InputPath,
    byte_range: tuple[int, int],
    header: bytes | None,
    hash_key: str,
    stats: ReadStats,
    block_size: int,
    on_block: Callable[[], None] | None,
) -> Iterator[Records]:
    from kpis.pipeline.spans import open_span, splittable

    if not splittable(path):
        raise ValueError(f"{input_name(path)} is compressed: it can only be read whole")
    start, end = byte_range
    if not 0 <= start <= end:
        raise ValueError(f"not a byte range: {byte_range}")
    if start > 0 and header is None:
        raise ValueError("a range after the first needs the file's header line")
    with _open(path, lambda p: open_span(p, start, end)) as stream, _read_errors(path):
        yield from _read_stream(
            stream, hash_key, stats, block_size, on_block, header if start > 0 else None
        )


def _open(path: InputPath, opener: Callable[[InputPath], IO[bytes]]) -> IO[bytes]:
    try:
        return opener(path)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UnreadableFile(f"cannot open the file: {error.strerror}") from error


@contextlib.contextmanager
def _read_errors(path: InputPath) -> Iterator[None]:
    """Turn what reading raises into :class:`UnreadableFile`, unless the file or storage is gone."""
    try:
        yield
    except FileNotFoundError:
        raise  # an object deleted while being read: vanished, not unreadable
    except (OSError, EOFError, zlib.error) as error:
        if is_url(path) and is_storage_error(error):
            raise  # the storage failed, not the file: the run stops, the file stays due
        raise UnreadableFile(f"cannot decompress or read the file: {error}") from error
    except pa.ArrowInvalid as error:
        raise UnreadableFile(f"not a readable CSV file: {error}") from error


def _read_stream(
    stream: IO[bytes],
    hash_key: str,
    stats: ReadStats,
    block_size: int,
    on_block: Callable[[], None] | None,
    header_line: bytes | None = None,
) -> Iterator[Records]:
    """Read the rows of ``stream``; it starts with the header line unless one is given."""
    if header_line is None:
        header_line, rest = _split_header(stream)
    else:
        rest = b""
    header = _parse_header(header_line)
    positions = _required_positions(header)
    width = len(header)
    rows = _RowGuard(stream, limit=block_size // 2, prefix=rest)

    names = [f"f{index}" for index in range(width)]
    columns = [names[positions[column]] for column in REQUIRED_COLUMNS]
    # A piece is below twice the block (see _line_chunks): the parser takes each
    # piece as one block, so that only the piece's own lines meet in a parse.
    read_options = pacsv.ReadOptions(
        column_names=names, block_size=2 * block_size, use_threads=False
    )
    as_bytes = pacsv.ConvertOptions(
        include_columns=columns,
        column_types=dict.fromkeys(columns, pa.binary()),
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    # The parser's own int64 conversion is the fast path for the integer
    # columns. It accepts what the rules accept (digits, with spaces or tabs
    # around), plus signs: a piece with a "-" anywhere, or any value the
    # parser refuses or leaves empty, is parsed again as bytes and checked
    # row by row.
    as_integers = pacsv.ConvertOptions(
        include_columns=columns,
        column_types={column: pa.int64() for column in columns} | {columns[0]: pa.binary()},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )

    def parse(piece: bytes, convert_options: pacsv.ConvertOptions) -> tuple[pa.Table, int]:
        """The piece's rows, and how many rows had the wrong number of fields."""
        ragged = 0

        def count_ragged(_row: Any) -> str:
            nonlocal ragged
            ragged += 1
            return "skip"

        table = pacsv.read_csv(
            pa.BufferReader(piece),
            read_options=read_options,
            parse_options=pacsv.ParseOptions(invalid_row_handler=count_ragged),
            convert_options=convert_options,
        )
        return table, ragged

    def parse_piece(piece: bytes) -> tuple[pa.Table, int]:
        parsed = None
        # "-" (a sign) and "x" (0x.. is hexadecimal to the parser) need the byte path.
        if piece.find(b"-") < 0 and piece.find(b"x") < 0 and piece.find(b"X") < 0:
            with contextlib.suppress(pa.ArrowInvalid):
                parsed = parse(piece, as_integers)
            if parsed is not None and not _plain_integers(parsed[0]):
                parsed = None
        return parsed or parse(piece, as_bytes)

    def parse_next() -> tuple[pa.RecordBatch | None, int]:
        """The next piece with rows (None at the end), and the ragged rows up to it."""
        ragged_total = 0
        for piece in pieces:
            if not piece.lstrip(b"\r\n"):  # no copy unless it starts with a line end
                continue  # blank lines only: the parser skips them too
            table, ragged = parse_piece(piece)
            if piece.find(b'"') >= 0 and _quote_open_at_line_end(piece, table.num_rows + ragged):
                table, ragged = parse_piece(_close_quotes_at_line_ends(piece))
            ragged_total += ragged
            if table.num_rows:
                return table.combine_chunks().to_batches()[0], ragged_total
        return None, ragged_total

    pieces = _line_chunks(rows, block_size)

    # The next piece is read, hashed and parsed in a helper thread while this
    # one is checked and aggregated: one piece ahead, so memory stays bounded
    # (Arrow's own streaming reader reads up to 32 blocks ahead).
    upcoming = _parse_thread().submit(parse_next)
    try:
        while True:
            batch, ragged = upcoming.result()
            if ragged:
                stats.rejects[RejectReason.WRONG_FIELD_COUNT] += ragged
            if batch is None:
                if rows.dropped:
                    stats.rejects[RejectReason.ROW_TOO_LONG] += rows.dropped
                break
            upcoming = _parse_thread().submit(parse_next)
            if on_block is not None:
                on_block()
            records, reason_codes = _validate(batch, hash_key)
            if reason_codes is not None:
                counts = np.bincount(reason_codes, minlength=len(_REASONS) + 1)
                for number, reason in enumerate(_REASONS, start=1):
                    if counts[number]:
                        stats.rejects[reason] += int(counts[number])
            stats.rows_accepted += len(records.cell_id)
            if len(records.cell_id):
                yield records
    finally:
        # Never leave the helper reading a file that is about to be closed.
        upcoming.cancel()
        wait([upcoming])


def _plain_integers(table: pa.Table) -> bool:
    """True when every integer column was parsed without an empty or negative value."""
    for column in table.columns[1:]:
        if column.null_count or (len(column) and pc.min(column).as_py() < 0):
            return False
    return True


def _split_header(stream: IO[bytes]) -> tuple[bytes, bytes]:
    """Read the header row; return it and the bytes already read past it."""
    buffer = b""
    while b"\n" not in buffer:
        chunk = stream.read(64 * 1024)
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > _HEADER_LIMIT and b"\n" not in buffer[:_HEADER_LIMIT]:
            raise UnreadableFile("no header row within the first 64 KiB: not a CSV file")
    if not buffer.strip():
        raise UnreadableFile("empty file: no header row")
    line, _, rest = buffer.partition(b"\n")
    return line.rstrip(b"\r"), rest


def _parse_header(line: bytes) -> list[str]:
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnreadableFile("the header row is not UTF-8 text") from None
    try:
        return [name.strip().lower() for name in next(csv.reader([text]))]
    except (csv.Error, StopIteration) as error:
        raise UnreadableFile(f"the header row is not CSV: {error}") from None


def _required_positions(names: list[str]) -> dict[str, int]:
    missing = [column for column in REQUIRED_COLUMNS if column not in names]
    if missing:
        raise UnreadableFile(
            "missing required column(s): "
            + ", ".join(missing)
            + f" (header has: {', '.join(names)[:200]})"
        )
    repeated = sorted({column for column in REQUIRED_COLUMNS if names.count(column) > 1})
    if repeated:
        raise UnreadableFile("column(s) appear more than once: " + ", ".join(repeated))
    return {column: names.index(column) for column in REQUIRED_COLUMNS}


@functools.cache
def _parse_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpis-parse")
