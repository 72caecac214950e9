"""A file read in byte ranges gives exactly what one read of the whole file gives.

Range boundaries are made to fall everywhere: inside quoted fields, bad rows,
too-long rows, between the CR and LF of a line end, just before and after a
line end. The ranges' partials merged and their stats summed must equal the
whole read: the same pairs and service totals, the same accepted rows, the
same rejects by reason; :func:`file_digest` gives the whole read's sha256.
"""

from __future__ import annotations

import gzip
import itertools
import random
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from kpis.pipeline import (
    FileOutcome,
    Partial,
    ReadStats,
    RejectReason,
    UnreadableFile,
    aggregate_file,
    aggregate_range,
    byte_ranges,
    file_digest,
    key_id_for,
    read_header,
    read_records,
    splittable,
    subscriber_hash_key,
)
from kpis.pipeline import spans as spans_module
from kpis.pipeline.lines import _LINE_ENDING_IN_QUOTE
from kpis.pipeline.tasks import file_to_state, range_to_state
from kpis.tests.seaweed import SeaweedServer

KEY = subscriber_hash_key("r" * 40)
SMALL_BLOCK = 256  # rows above 128 bytes are too long
HEADER = b"msisdn,cell_id,note,service_id,bytes_uplink,bytes_downlink"
TOO_LONG = b"49170" + b"9" * 200 + b",1,long,2,3,4"

# Lines of every kind the ranges must agree on (without their line end).
KINDS: list[bytes] = [
    b"4917000001,10,plain,1,100,200",
    b"4917000002,11,plain,2,5,5",
    b'"4917000003",12,"quoted, with a comma",1,7,8',
    b'4917000004,13,"doubled ""quotes"" inside",3,1,1',
    b'"4917000005","14","all quoted","2","30","40"',
    b" 4917000006 ,15, spaced ,1, 9 ,\t1\t",
    b"4917000007,16,ragged,1,2",  # a field short
    b"4917000008,17,ragged,1,2,3,4",  # a field over
    b"4917000009,-18,negative,1,2,3",
    b"4917000010,19,non-digit,1,2x,3",
    b"4917000011,0x20,hexadecimal,1,2,3",
    b",21,no msisdn,1,2,3",
    b"4917000012,22,empty,,2,3",
    b"4917000013,23,huge,1,99999999999999999999,3",
    b"4917000014,24,\xff not utf-8,1,2,3",
    b"49170\xff00015,25,msisdn not utf-8,1,2,3",
    TOO_LONG,
    b"",  # a blank line
]


def rows_of(seed: int, count: int) -> list[bytes]:
    """Good rows with repeats (so that pairs and totals merge), mixed with every kind."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        if rng.random() < 0.3:
            lines.append(rng.choice(KINDS))
        else:
            msisdn = 4917100000 + rng.randrange(40)
            cell, service = rng.randrange(25), rng.randrange(6)
            lines.append(b"%d,%d,n,%d,%d,%d" % (msisdn, cell, service, rng.randrange(999), 1))
    return lines


def file_bytes(
    lines: list[bytes], *, ends: str = "lf", bom: bool = False, last: str = "newline"
) -> bytes:
    """A file of ``lines`` after the header: LF, CRLF or mixed ends; how the file ends."""
    rng = random.Random(len(lines))
    choices = {"lf": [b"\n"], "crlf": [b"\r\n"], "mixed": [b"\n", b"\r\n"]}[ends]
    body = b"".join(line + rng.choice(choices) for line in [HEADER, *lines])
    if last == "no newline":
        body = body.rstrip(b"\r\n")
    elif last == "empty line":
        body += choices[0]
    return (b"\xef\xbb\xbf" if bom else b"") + body


def whole(path: Path, block_size: int = SMALL_BLOCK) -> FileOutcome:
    outcome = aggregate_file(path, hash_key=KEY, block_size=block_size)
    assert outcome.error is None, outcome.error
    return outcome


def in_ranges(
    path: Path | str, range_bytes: int, *, size: int, block_size: int = SMALL_BLOCK
) -> FileOutcome:
    """Read ``path`` range by range, as executor tasks would, and merge the outcomes."""
    header = read_header(path)
    outcomes = [
        aggregate_range(path, byte_range=span, header=header, hash_key=KEY, block_size=block_size)
        for span in byte_ranges(size, range_bytes)
    ]
    assert all(outcome.error is None for outcome in outcomes), outcomes
    assert all(outcome.stats.sha256 == "" for outcome in outcomes)
    partials = [outcome.partial for outcome in outcomes if outcome.partial is not None]
    return FileOutcome(
        partial=Partial.merge(partials, key_id=key_id_for(KEY)),
        stats=ReadStats.merged([outcome.stats for outcome in outcomes], sha256=file_digest(path)),
    )


def pairs(partial: Partial | None) -> pd.DataFrame:
    assert partial is not None
    return partial.pairs.sort_values(["cell_id", "subscriber"], ignore_index=True)


def assert_same(ranged: FileOutcome, read_whole: FileOutcome) -> None:
    assert ranged.stats == read_whole.stats  # accepted rows, rejects by reason, sha256
    assert ranged.partial is not None
    assert read_whole.partial is not None
    pd.testing.assert_frame_equal(pairs(ranged.partial), pairs(read_whole.partial))
    pd.testing.assert_series_equal(
        ranged.partial.service_bytes.sort_index(), read_whole.partial.service_bytes.sort_index()
    )
    assert ranged.partial.top_cells(10) == read_whole.partial.top_cells(10)
    assert ranged.partial.top_services(10) == read_whole.partial.top_services(10)


# Tiny sizes put boundaries everywhere (with 1, every byte is a range of its own).
RANGE_BYTES = [7, 13, 64, 100, 257, 1000, 1 << 20]


class TestByteRanges:
    def test_they_cover_the_file_in_order_without_gaps(self) -> None:
        assert byte_ranges(100, 30) == [(0, 30), (30, 60), (60, 90), (90, 100)]
        assert byte_ranges(90, 30) == [(0, 30), (30, 60), (60, 90)]

    @pytest.mark.parametrize("size", [0, 1, 64])
    def test_a_file_that_fits_is_one_range(self, size: int) -> None:
        assert byte_ranges(size, 64) == [(0, size)]

    def test_a_range_size_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            byte_ranges(10, 0)


@pytest.mark.parametrize("range_bytes", RANGE_BYTES)
@pytest.mark.parametrize(
    ("ends", "bom", "last"),
    [
        ("lf", False, "newline"),
        ("crlf", False, "newline"),
        ("mixed", True, "no newline"),
        ("crlf", True, "empty line"),
        ("lf", False, "no newline"),
    ],
)
def test_the_ranges_merged_equal_the_whole_read(
    tmp_path: Path, range_bytes: int, ends: str, bom: bool, last: str
) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes(file_bytes(rows_of(1, 120), ends=ends, bom=bom, last=last))
    read_whole = whole(path)
    # Every kind of row is in the file, and each kind of reject was counted.
    assert set(read_whole.stats.rejects) == set(RejectReason)
    assert_same(in_ranges(path, range_bytes, size=path.stat().st_size), read_whole)


@pytest.mark.parametrize("ends", ["lf", "crlf", "mixed"])
def test_a_boundary_at_every_byte_changes_nothing(tmp_path: Path, ends: str) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes(file_bytes(rows_of(9, 40), ends=ends, bom=True, last="no newline"))
    assert_same(in_ranges(path, 1, size=path.stat().st_size), whole(path))


@pytest.mark.parametrize("range_bytes", [1, 7, 64, 4096])
def test_a_range_boundary_inside_a_quoted_field_splits_nothing(
    tmp_path: Path, range_bytes: int
) -> None:
    quoted = b'"4917000099",5,"a long, quoted note, with commas, ""quotes"", and more",1,10,20'
    path = tmp_path / "records.csv"
    path.write_bytes(file_bytes([quoted] * 30))
    read_whole = whole(path)
    assert read_whole.stats.rows_accepted == 30
    assert_same(in_ranges(path, range_bytes, size=path.stat().st_size), read_whole)


class TestALineEndInsideQuotes:
    """A line end always ends a row, also inside a quoted field: whole, in any blocks or ranges.

    Otherwise the parser would carry the field over the line end when both lines
    happen to be in one block, and not when a block or range boundary falls
    between them.
    """

    SPLIT = b'4917000002,11,"note with\nnewline",2,5,5'

    @pytest.mark.parametrize("block_size", [SMALL_BLOCK, 1000, 1 << 20])
    def test_the_two_lines_are_two_bad_rows(self, tmp_path: Path, block_size: int) -> None:
        path = tmp_path / "records.csv"
        path.write_bytes(file_bytes([b"4917000001,10,plain,1,100,200", self.SPLIT] * 20))
        read_whole = whole(path, block_size=block_size)
        assert read_whole.stats.rows_accepted == 20
        # '4917000002,11,"note with' and 'newline",2,5,5': three and four fields.
        assert read_whole.stats.rejects == {RejectReason.WRONG_FIELD_COUNT: 40}
        for range_bytes in (7, 64, 300):
            ranged = in_ranges(path, range_bytes, size=path.stat().st_size, block_size=block_size)
            assert_same(ranged, read_whole)

    def test_a_quoted_field_open_at_its_line_end_ends_there(self, tmp_path: Path) -> None:
        path = tmp_path / "records.csv"
        open_last = b'4917000003,12,n,1,2,"30'
        path.write_bytes(file_bytes([open_last, b"4917000004,13,n,1,2,3"] * 3, ends="crlf"))
        read_whole = whole(path)
        assert read_whole.stats.rows_accepted == 6
        assert read_whole.partial is not None
        assert read_whole.partial.top_services(1) == [(1, 3 * 32 + 3 * 5)]
        assert_same(in_ranges(path, 5, size=path.stat().st_size), read_whole)

    def test_the_open_quote_rule_is_the_parsers_for_every_short_line(self) -> None:
        """Every line of up to 6 of these characters: open at its end exactly when Arrow says."""
        ragged = 0

        def count_ragged(_row: object) -> str:
            nonlocal ragged
            ragged += 1
            return "skip"

        for length in range(7):
            for characters in itertools.product(b'",a ', repeat=length):
                line = bytes(characters)
                ragged = 0
                table = pacsv.read_csv(
                    pa.BufferReader(line + b"\nnext\n"),
                    read_options=pacsv.ReadOptions(column_names=["a"]),
                    parse_options=pacsv.ParseOptions(invalid_row_handler=count_ragged),
                    convert_options=pacsv.ConvertOptions(column_types={"a": pa.binary()}),
                )
                carried_over = table.num_rows + ragged < (2 if line else 1)
                assert (_LINE_ENDING_IN_QUOTE.match(line) is not None) == carried_over, line

    quoted_fields = st.sampled_from(
        [b"1", b"22", b'"3"', b'"4,4"', b'"5""5"', b'"a\nb"', b'"c\r\nd"', b'"open', b'e"f', b""]
    )

    @hypothesis_settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        lines=st.lists(st.lists(quoted_fields, min_size=4, max_size=7).map(b",".join), max_size=30),
        ends=st.sampled_from(["lf", "crlf", "mixed"]),
        last=st.sampled_from(["newline", "no newline"]),
        range_bytes=st.integers(1, 300),
    )
    @example(
        lines=[b'1,"open,2', b'3,"x""', b'"a\nb",1,2,3,4,5'],
        ends="lf",
        last="newline",
        range_bytes=9,
    )
    def test_any_quoting_reads_the_same_whole_in_any_blocks_and_in_ranges(
        self, tmp_path: Path, lines: list[bytes], ends: str, last: str, range_bytes: int
    ) -> None:
        path = tmp_path / "records.csv"
        content = file_bytes(lines, ends=ends, last=last)
        path.write_bytes(content)
        read_whole = whole(path, block_size=1 << 20)
        assert_same(whole(path, block_size=SMALL_BLOCK), read_whole)
        assert_same(in_ranges(path, range_bytes, size=len(content)), read_whole)


@pytest.mark.parametrize("range_bytes", [1, 7, 50, 1000])
@pytest.mark.parametrize("content", [HEADER, HEADER + b"\n", HEADER + b"\r\n\r\n"])
def test_a_header_only_file_has_no_rows_in_any_range(
    tmp_path: Path, range_bytes: int, content: bytes
) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes(content)
    ranged = in_ranges(path, range_bytes, size=len(content))
    assert_same(ranged, whole(path))
    assert ranged.stats.rows_accepted == 0
    assert not ranged.stats.rejects


@pytest.mark.parametrize("range_bytes", [7, 100])
def test_a_file_of_only_too_long_rows_counts_each_once(tmp_path: Path, range_bytes: int) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes(file_bytes([TOO_LONG] * 5 + [b"4917000001,10,plain,1,100,200"] + [TOO_LONG]))
    ranged = in_ranges(path, range_bytes, size=path.stat().st_size)
    assert_same(ranged, whole(path))
    assert ranged.stats.rejects == {RejectReason.ROW_TOO_LONG: 6}
    assert ranged.stats.rows_accepted == 1


def test_with_the_default_block_size_the_ranges_agree_too(tmp_path: Path) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes(file_bytes(rows_of(2, 3000), ends="mixed"))
    read_whole = whole(path, block_size=8 * 1024 * 1024)
    for range_bytes in (997, 10_000, 40_000):
        ranged = in_ranges(path, range_bytes, size=path.stat().st_size, block_size=8 * 1024 * 1024)
        assert_same(ranged, read_whole)


line_kinds = st.sampled_from(KINDS) | st.builds(
    lambda msisdn, cell, service, up: b"%d,%d,x,%d,%d,0" % (msisdn, cell, service, up),
    st.integers(4917000000, 4917000020),
    st.integers(0, 12),
    st.integers(0, 4),
    st.integers(0, 10**6),
)


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(line_kinds, max_size=40),
    ends=st.sampled_from(["lf", "crlf", "mixed"]),
    bom=st.booleans(),
    last=st.sampled_from(["newline", "no newline", "empty line"]),
    range_bytes=st.integers(1, 600),
)
@example(lines=[TOO_LONG], ends="crlf", bom=True, last="no newline", range_bytes=1)
def test_any_file_read_in_any_ranges_equals_the_whole_read(
    tmp_path: Path, lines: list[bytes], ends: str, bom: bool, last: str, range_bytes: int
) -> None:
    path = tmp_path / "records.csv"
    content = file_bytes(lines, ends=ends, bom=bom, last=last)
    path.write_bytes(content)
    assert_same(in_ranges(path, range_bytes, size=len(content)), whole(path))


class TestReadHeader:
    def test_it_is_the_first_line_without_its_line_end(self, tmp_path: Path) -> None:
        path = tmp_path / "records.csv"
        path.write_bytes(file_bytes(rows_of(3, 5), ends="crlf", bom=True))
        assert read_header(path) == b"\xef\xbb\xbf" + HEADER

    @pytest.mark.parametrize("content", [b"", b" \r\n", b"x" * (70 * 1024)])
    def test_a_file_without_a_header_is_unreadable_as_when_read_whole(
        self, tmp_path: Path, content: bytes
    ) -> None:
        path = tmp_path / "records.csv"
        path.write_bytes(content)
        with pytest.raises(UnreadableFile) as raised:
            read_header(path)
        assert str(raised.value) == aggregate_file(path, hash_key=KEY).error

    def test_a_missing_file_is_not_found(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            read_header(tmp_path / "gone.csv")


def test_a_bad_header_makes_every_range_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes(b"a,b,c\n1,2,3\n4,5,6\n")
    expected = aggregate_file(path, hash_key=KEY).error
    assert expected is not None
    header = read_header(path)
    for span in byte_ranges(path.stat().st_size, 6):
        outcome = aggregate_range(path, byte_range=span, header=header, hash_key=KEY)
        assert outcome.partial is None
        assert outcome.error == expected


@pytest.mark.parametrize("compressed", [False, True])
def test_the_digest_is_the_whole_reads_sha256(tmp_path: Path, compressed: bool) -> None:
    content = file_bytes(rows_of(4, 200))
    path = tmp_path / ("records.csv.gz" if compressed else "records.csv")
    path.write_bytes(gzip.compress(content) if compressed else content)
    assert file_digest(path) == whole(path).stats.sha256 != ""


def test_a_gzip_file_is_not_split(tmp_path: Path) -> None:
    path = tmp_path / "records.csv.gz"
    path.write_bytes(gzip.compress(file_bytes(rows_of(5, 20))))
    assert not splittable(path)
    assert splittable(tmp_path / "records.csv")
    with pytest.raises(ValueError, match="compressed"):
        aggregate_range(path, byte_range=(0, 10), header=HEADER, hash_key=KEY)


@pytest.mark.parametrize("span", [(5, 2), (-1, 9)])
def test_a_range_must_be_a_span_of_the_file(tmp_path: Path, span: tuple[int, int]) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes(file_bytes(rows_of(5, 20)))
    with pytest.raises(ValueError, match="not a byte range"):
        aggregate_range(path, byte_range=span, header=HEADER, hash_key=KEY)


def test_a_range_after_the_first_needs_the_header(tmp_path: Path) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes(file_bytes(rows_of(5, 20)))
    stats = ReadStats()
    with pytest.raises(ValueError, match="header"):
        list(read_records(path, hash_key=KEY, stats=stats, byte_range=(10, 20)))


def test_a_range_reads_its_span_and_not_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes(file_bytes(rows_of(6, 40_000)))
    size = path.stat().st_size
    header = read_header(path)
    read: list[int] = []
    opened = spans_module.open_input_part

    class Counting:
        def __init__(self, handle: IO[bytes]) -> None:
            self.handle = handle

        def read(self, count: int = -1) -> bytes:
            data = self.handle.read(count)
            read.append(len(data))
            return data

        def seek(self, offset: int) -> int:
            return self.handle.seek(offset)

        def close(self) -> None:
            self.handle.close()

    monkeypatch.setattr(spans_module, "open_input_part", lambda p: Counting(opened(p)))
    span = (size // 3, size // 3 + 200_000)
    outcome = aggregate_range(path, byte_range=span, header=header, hash_key=KEY)
    assert outcome.stats.rows_accepted > 0
    # The span, the rest of its last line and one small look for the line end, no more.
    assert 200_000 <= sum(read) <= 200_000 + 2 * 64 * 1024


def test_a_range_task_stores_its_state_as_the_file_task_does(tmp_path: Path) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes(file_bytes(rows_of(7, 500)))
    size = path.stat().st_size
    store = str(tmp_path / "states")
    full = file_to_state(
        path,
        hash_key=KEY,
        block_size=SMALL_BLOCK,
        store_url=store,
        key_prefix="whole/f",
        partitions=4,
    )
    header = read_header(path)
    reads = [
        range_to_state(
            path,
            byte_range=span,
            header=header,
            hash_key=KEY,
            block_size=SMALL_BLOCK,
            store_url=store,
            key_prefix=f"r/{i}",
            partitions=4,
        )
        for i, span in enumerate(byte_ranges(size, size // 3))
    ]
    assert ReadStats.merged([r.stats for r in reads], sha256=file_digest(path)) == full.stats
    assert all(r.state is not None and r.error is None for r in reads)
    from kpis.pipeline.store import StateStore

    states = StateStore(store)
    assert full.state is not None
    merged = Partial.merge(
        [states.read(r.state.key) for r in reads if r.state is not None], key_id=key_id_for(KEY)
    )
    pd.testing.assert_frame_equal(pairs(merged), pairs(states.read(full.state.key)))


def test_a_range_of_an_object_in_a_bucket_equals_the_local_file(
    tmp_path: Path, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in seaweed.environ().items():
        monkeypatch.setenv(variable, value)
    content = file_bytes(rows_of(8, 2000), ends="mixed", bom=True, last="no newline")
    path = tmp_path / "records.csv"
    path.write_bytes(content)
    bucket = seaweed.new_bucket()
    url = f"s3://{bucket}/input/records.csv"
    seaweed.filesystem().pipe(url, content)
    assert read_header(url) == read_header(path)
    assert file_digest(url) == file_digest(path)
    for range_bytes in (4096, 30_000):
        assert_same(
            in_ranges(url, range_bytes, size=len(content)),
            in_ranges(path, range_bytes, size=len(content)),
        )
    assert_same(in_ranges(url, 10_000, size=len(content)), whole(path))
    # The executor tasks take the object's URL as text, as they take a local path.
    store = str(tmp_path / "states")
    file_read = file_to_state(
        url, hash_key=KEY, block_size=SMALL_BLOCK, store_url=store, key_prefix="f", partitions=2
    )
    assert file_read.stats == whole(path).stats
    header = read_header(url)
    reads = [
        range_to_state(
            url,
            byte_range=span,
            header=header,
            hash_key=KEY,
            block_size=SMALL_BLOCK,
            store_url=store,
            key_prefix="r",
            partitions=2,
        )
        for span in byte_ranges(len(content), 20_000)
    ]
    assert ReadStats.merged([r.stats for r in reads], sha256=file_digest(url)) == whole(path).stats
