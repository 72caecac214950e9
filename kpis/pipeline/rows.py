"""What a valid row is: the checks each parsed block goes through, vectorised.

A bad row is counted under its :class:`RejectReason` and dropped; the rest
become :class:`Records`, with each distinct msisdn trimmed and replaced by its
keyed hash (computed once per distinct value, in a helper thread).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MAX_MSISDN_LENGTH = 64
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
