"""Keyed SipHash-2-4 of many byte strings at once, vectorised with numpy.

The result equals ``pandas.util.hash_array(values, hash_key=key,
categorize=False)`` for the same UTF-8 strings (SipHash-2-4 followed by the
same 64-bit mixing step), so state stored by earlier versions stays
comparable, without importing pandas or building one Python object per value.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_U64 = np.uint64
_MIX_1 = _U64(0xBF58476D1CE4E5B9)
_MIX_2 = _U64(0x94D049BB133111EB)


# Rows hashed together; small enough that the working arrays stay in the CPU cache.
_CHUNK_ROWS = 32768


def _rotate_left(value: np.ndarray, bits: int, scratch: np.ndarray) -> None:
    np.right_shift(value, _U64(64 - bits), out=scratch)
    np.left_shift(value, _U64(bits), out=value)
    value |= scratch


def _sip_rounds(v: list[np.ndarray], rounds: int, scratch: np.ndarray) -> None:
    v0, v1, v2, v3 = v
    for _ in range(rounds):
        v0 += v1
        _rotate_left(v1, 13, scratch)
        v1 ^= v0
        _rotate_left(v0, 32, scratch)
        v2 += v3
        _rotate_left(v3, 16, scratch)
        v3 ^= v2
        v0 += v3
        _rotate_left(v3, 21, scratch)
        v3 ^= v0
        v2 += v1
        _rotate_left(v1, 17, scratch)
        v1 ^= v2
        _rotate_left(v2, 32, scratch)


def _siphash_same_length(words: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """SipHash-2-4 of rows that all have the same length, given as padded uint64 words."""
    if len(words) > _CHUNK_ROWS:
        return np.concatenate(
            [
                _siphash_same_length(words[start : start + _CHUNK_ROWS], key)
                for start in range(0, len(words), _CHUNK_ROWS)
            ]
        )
    count = len(words)
    scratch = np.empty(count, dtype=np.uint64)
    k0, k1 = _U64(key[0]), _U64(key[1])
    v = [
        np.full(count, k0 ^ _U64(0x736F6D6570736575), dtype=np.uint64),
        np.full(count, k1 ^ _U64(0x646F72616E646F6D), dtype=np.uint64),
        np.full(count, k0 ^ _U64(0x6C7967656E657261), dtype=np.uint64),
        np.full(count, k1 ^ _U64(0x7465646279746573), dtype=np.uint64),
    ]
    for column in range(words.shape[1]):
        word = np.ascontiguousarray(words[:, column])
        v[3] ^= word
        _sip_rounds(v, 2, scratch)
        v[0] ^= word
    v[2] ^= _U64(0xFF)
    _sip_rounds(v, 4, scratch)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def _key_words(hash_key: str) -> tuple[int, int]:
    key = hash_key.encode("utf-8")
    if len(key) != 16:
        raise ValueError("the hash key must be 16 bytes of UTF-8")
    return int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")


def hash_binary(values: pa.Array, hash_key: str) -> np.ndarray:
    """Keyed 64-bit hash of every value of a null-free binary or string array."""
    key = _key_words(hash_key)
    offset_type: type[np.signedinteger]
    if values.type in (pa.large_binary(), pa.large_string()):
        offset_type = np.int64
    elif values.type in (pa.binary(), pa.string()):
        offset_type = np.int32
    else:
        raise TypeError(f"cannot hash values of type {values.type}")
    if values.null_count:
        raise ValueError("cannot hash null values")
    count = len(values)
    result = np.empty(count, dtype=np.uint64)
    if count == 0:
        return result
    _, offsets_buffer, data_buffer = values.buffers()[:3]
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type, count=values.offset + count + 1)
    offsets = offsets[values.offset :].astype(np.int64)
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    data = (
        np.frombuffer(data_buffer, dtype=np.uint8)
        if data_buffer is not None
        else np.zeros(0, np.uint8)
    )
    present = np.flatnonzero(np.bincount(lengths))
    if len(present) == 1 and lengths[0] * count == offsets[-1] - offsets[0]:
        # All values have one length and lie back to back: a reshape, no gather.
        length = int(present[0])
        block = data[offsets[0] : offsets[-1]].reshape(count, length)
        return _mix(_siphash_same_length(_padded_words(block, length), key))
    for length in present.tolist():
        rows = np.flatnonzero(lengths == length)
        block = data[np.add.outer(starts[rows], np.arange(length))]
        result[rows] = _siphash_same_length(_padded_words(block, length), key)
    return _mix(result)


def _padded_words(block: np.ndarray, length: int) -> np.ndarray:
    """Rows of ``length`` bytes as SipHash message words: zero padded, length in the last byte."""
    width = (length // 8 + 1) * 8
    padded = np.zeros((len(block), width), dtype=np.uint8)
    padded[:, :length] = block
    padded[:, width - 1] = length & 0xFF
    return padded.view("<u8")


def _mix(values: np.ndarray) -> np.ndarray:
    values ^= values >> _U64(30)
    values *= _MIX_1
    values ^= values >> _U64(27)
    values *= _MIX_2
    values ^= values >> _U64(31)
    return values
