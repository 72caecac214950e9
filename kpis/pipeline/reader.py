"""Stream one raw CSV file into validated record batches.

A file is parsed in blocks of bounded size by pyarrow, every column as raw
bytes, and each block is validated with vectorised kernels: a bad row is
counted under its reason and dropped, the rest goes on. Only a file that
cannot be parsed at all raises :class:`UnreadableFile`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import gzip
import hashlib
import io
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from kpis.pipeline.files import DEFAULT_BLOCK_BYTES
from kpis.pipeline.location import InputPath, input_name, is_storage_error, is_url, open_input

REQUIRED_COLUMNS = ("msisdn", "cell_id", "service_id", "bytes_uplink", "bytes_downlink")
MAX_MSISDN_LENGTH = 64
_HEADER_LIMIT = 64 * 1024
# Each piece of a file is parsed in sub-blocks of this size, in parallel.
_PARSE_BLOCK_BYTES = 64 * 1024 * 1024
_INT64_MAX_DIGITS = b"9223372036854775807"
_DIGITS = (ord("0"), ord("9"))
# Any string of at most this many digits is below 2**63.
_SAFE_DIGITS = 18
# Printable ASCII without the space: such an msisdn needs no trimming and no check.
_VISIBLE_ASCII = (0x21, 0x7E)


class RejectReason(StrEnum):
    """Why a row was not counted; the values are stable and shown to operators."""

    WRONG_FIELD_COUNT = "wrong_field_count"
    MISSING_VALUE = "missing_value"
    MALFORMED_INTEGER = "malformed_integer"
    NEGATIVE_INTEGER = "negative_integer"
    INTEGER_OUT_OF_RANGE = "integer_out_of_range"
    INVALID_MSISDN = "invalid_msisdn"
    ROW_TOO_LONG = "row_too_long"


# Row-level reason codes: 0 means accepted, n means _REASONS[n - 1].
_REASONS = list(RejectReason)
_CODE = {reason: number for number, reason in enumerate(_REASONS, start=1)}


class UnreadableFile(Exception):
    """The file as a whole cannot be used; the message says why."""


@dataclass(slots=True)
class Records:
    """Validated rows of one block, as aligned numpy columns.

    Subscribers come as a small table of keyed hashes (one per distinct raw
    msisdn of the block) and a per-row index into it, so that work per
    subscriber is done once per distinct value rather than once per row.
    """

    subscriber_code: np.ndarray  # int, per row: index into subscriber_hashes
    subscriber_hashes: np.ndarray  # uint64 keyed hash of each distinct raw msisdn, trimmed
    cell_id: np.ndarray  # int64
    service_id: np.ndarray  # int64
    total_bytes: np.ndarray  # int64, bytes_uplink + bytes_downlink

    @property
    def subscriber(self) -> np.ndarray:
        """The keyed hash of each row's trimmed msisdn (uint64)."""
        return self.subscriber_hashes[self.subscriber_code]


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
    from kpis.pipeline.ranges import open_span, splittable

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


def _validate(batch: pa.RecordBatch, hash_key: str) -> tuple[Records, np.ndarray | None]:
    """Check every field of a block; return the good rows and per-row reason codes."""
    # The msisdn work and the integer parsing are independent and both release
    # the GIL in Arrow and numpy kernels: on two cores they overlap.
    msisdn = _helper_thread().submit(_subscriber_hashes, batch.column(0), hash_key)
    cell_id, cell_codes = _parse_non_negative(batch.column(1))
    service_id, service_codes = _parse_non_negative(batch.column(2))
    uplink, uplink_codes = _parse_non_negative(batch.column(3))
    downlink, downlink_codes = _parse_non_negative(batch.column(4))
    subscriber_code, subscriber_hashes, msisdn_codes = msisdn.result()
    total = uplink + downlink  # both below 2**63: a wrapped sum shows as negative
    overflow = total < 0

    reason_codes: np.ndarray | None = None
    for codes in (msisdn_codes, cell_codes, service_codes, uplink_codes, downlink_codes):
        if codes is None:
            continue
        if reason_codes is None:
            reason_codes = codes.copy()
        else:
            # The first problem in column order names the row's reason.
            np.copyto(reason_codes, codes, where=reason_codes == 0)
    if overflow.any():
        if reason_codes is None:
            reason_codes = np.zeros(len(total), dtype=np.uint8)
        reason_codes[(reason_codes == 0) & overflow] = _CODE[RejectReason.INTEGER_OUT_OF_RANGE]

    if reason_codes is None:
        return Records(subscriber_code, subscriber_hashes, cell_id, service_id, total), None
    keep = reason_codes == 0
    return (
        Records(
            subscriber_code[keep], subscriber_hashes, cell_id[keep], service_id[keep], total[keep]
        ),
        reason_codes,
    )


@functools.cache
def _helper_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpis-msisdn")


@functools.cache
def _parse_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpis-parse")


def _subscriber_hashes(
    column: pa.Array, hash_key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Hash each trimmed msisdn with pandas' keyed SipHash; flag empty or invalid ones.

    Returns per-row indices into the hashes of the distinct raw values, and
    per-row reason codes. Values are dictionary-encoded first, so each
    distinct msisdn is hashed once.
    """
    encoded = pc.dictionary_encode(column)
    distinct = encoded.dictionary
    indices = encoded.indices.to_numpy()
    if _all_bytes_within(distinct, _VISIBLE_ASCII, MAX_MSISDN_LENGTH):
        # Nothing to trim and nothing to reject: hash the raw values as they are.
        return indices, _keyed_hashes(distinct.cast(pa.string()), hash_key), None
    try:
        text = distinct.cast(pa.string())
    except pa.ArrowInvalid:
        text = pa.array([_utf8_or_none(value) for value in distinct.to_pylist()], pa.string())
    not_utf8 = _mask(pc.is_null(text))
    trimmed = pc.fill_null(pc.utf8_trim_whitespace(text), "")
    length = pc.utf8_length(trimmed).to_numpy()
    control = _mask(pc.match_substring_regex(trimmed, r"[\x00-\x1f\x7f]"))
    reasons = np.zeros(len(distinct), dtype=np.uint8)
    reasons[not_utf8 | control | (length > MAX_MSISDN_LENGTH)] = _CODE[RejectReason.INVALID_MSISDN]
    reasons[(length == 0) & ~not_utf8] = _CODE[RejectReason.MISSING_VALUE]
    row_reasons = reasons[indices]
    hashes = _keyed_hashes(trimmed, hash_key)
    return indices, hashes, (row_reasons if row_reasons.any() else None)


def _keyed_hashes(text: pa.Array, hash_key: str) -> np.ndarray:
    """pandas' keyed SipHash-2-4 of each value, as stored states have always used."""
    values = text.to_numpy(zero_copy_only=False)
    return pd.util.hash_array(values, hash_key=hash_key, categorize=False)


def _all_bytes_within(column: pa.Array, allowed: tuple[int, int], max_length: int) -> bool:
    """True when every value has 1 to ``max_length`` bytes, all in the ``allowed`` range.

    Looks at the array's raw offsets and bytes, without a kernel per rule.
    """
    if column.null_count or len(column) == 0:
        return False
    _, offsets_buffer, data_buffer = column.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=column.offset + len(column) + 1)
    offsets = offsets[column.offset :]
    lengths = np.diff(offsets)
    if lengths.min() < 1 or lengths.max() > max_length:
        return False
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
    low, high = allowed
    # Unsigned wrap-around: bytes below ``low`` become large, so one comparison checks both ends.
    return bool(((data - np.uint8(low)) <= np.uint8(high - low)).all())


def _utf8_or_none(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _parse_non_negative(column: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse decimal integers in 0..2**63-1; return values and per-row reason codes."""
    if column.type == pa.int64():
        return column.to_numpy(), None  # parsed and checked while reading
    if _all_bytes_within(column, _DIGITS, _SAFE_DIGITS):
        # Plain ASCII digits are valid UTF-8 and fit int64: reinterpret without a copy.
        return pc.cast(column.view(pa.string()), pa.int64()).to_numpy(), None
    try:
        text = column.cast(pa.string())
        if pc.all(pc.utf8_is_digit(text)).as_py():
            return pc.cast(text, pa.int64()).to_numpy(), None
    except pa.ArrowInvalid:
        pass  # not UTF-8, or beyond int64: sort it out row by row
    return _parse_non_negative_rows(column)


def _parse_non_negative_rows(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    trimmed = pc.replace_substring_regex(column, r"^[ \t]+|[ \t]+$", "")
    digits = _mask(pc.match_substring_regex(trimmed, r"^[0-9]+$"))
    negative = _mask(pc.match_substring_regex(trimmed, r"^-[0-9]+$"))
    empty = pc.binary_length(trimmed).to_numpy() == 0
    canonical = pc.replace_substring_regex(trimmed, r"^0+([0-9])", r"\1")
    length = pc.binary_length(canonical).to_numpy()
    above_max = _mask(pc.greater(canonical, pa.scalar(_INT64_MAX_DIGITS, pa.binary())))
    too_large = digits & ((length > 19) | ((length == 19) & above_max))

    codes = np.full(len(column), _CODE[RejectReason.MALFORMED_INTEGER], dtype=np.uint8)
    codes[negative] = _CODE[RejectReason.NEGATIVE_INTEGER]
    codes[empty] = _CODE[RejectReason.MISSING_VALUE]
    codes[digits] = 0
    codes[too_large] = _CODE[RejectReason.INTEGER_OUT_OF_RANGE]
    good = codes == 0
    values = pc.cast(
        pc.if_else(pa.array(good), canonical, pa.scalar(b"0", pa.binary())).cast(pa.string()),
        pa.int64(),
    ).to_numpy()
    return values, codes


def _mask(array: pa.Array) -> np.ndarray:
    return pc.fill_null(array, False).to_numpy(zero_copy_only=False)


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
