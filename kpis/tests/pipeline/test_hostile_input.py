"""Hostile input: generated malformed CSV against an independent, plain validator.

The validator below restates the input contract with Python's csv module and
nothing from the reader: a row is rejected for the first problem found in
column order (msisdn, cell_id, service_id, bytes_uplink, bytes_downlink),
then for an uplink + downlink sum beyond 2**63 - 1; a row of the wrong width
is rejected whole; a line longer than half the parser's block is rejected as
too long before it is parsed.

Where CSV dialects disagree, the generated files stay inside what both
parsers read the same way: a field is either bare (no quote, comma, CR or LF
in it) or quoted as a whole with inner quotes doubled, and no field holds a
line break. Everything else (NUL bytes, invalid UTF-8, control characters,
Unicode spaces and digits, huge values, ragged and blank lines) is fair game.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from kpis.models import InputFileRecord, InputFileStatus
from kpis.pipeline import REQUIRED_COLUMNS, aggregate_file, scan_input_dir
from kpis.pipeline.location import input_parent
from kpis.sampledata import file_name
from kpis.tests.conftest import InputFolder, RunResult, utc
from kpis.tests.faults import database_clear

HASH_KEY = "0123456789abcdef"
INT64_MAX = 2**63 - 1
BLOCK_SIZES = [256, 4096, 1 << 20]

# --- the independent validator ----------------------------------------------


@dataclass
class Expected:
    """What reading a file must find."""

    accepted: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    service_bytes: Counter[int] = field(default_factory=Counter)
    cell_users: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))


def _integer(raw: bytes) -> tuple[int, str | None]:
    """The value of an integer field, or 0 and why it is bad."""
    text = re.sub(rb"^[ \t]+|[ \t]+$", b"", raw)
    if text == b"":
        return 0, "missing_value"
    if re.fullmatch(rb"[0-9]+", text):
        value = int(text)
        return (value, None) if value <= INT64_MAX else (0, "integer_out_of_range")
    if re.fullmatch(rb"-[0-9]+", text):
        return 0, "negative_integer"
    return 0, "malformed_integer"


def _msisdn(raw: bytes) -> tuple[str, str | None]:
    """The trimmed msisdn, or "" and why it is bad."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "", "invalid_msisdn"
    text = text.strip()
    if text == "":
        return "", "missing_value"
    if len(text) > 64 or re.search(r"[\x00-\x1f\x7f]", text):
        return "", "invalid_msisdn"
    return text, None


def validate(data: bytes, *, block_size: int) -> Expected:
    """Read an uncompressed file whose header is valid, the plain way."""
    header, _, body = data.partition(b"\n")
    names = [n.strip().lower() for n in next(csv.reader([header.decode("utf-8-sig")]))]
    position = {column: names.index(column) for column in REQUIRED_COLUMNS}
    expected = Expected()
    lines = []
    for line in re.split(rb"[\r\n]", body):
        if len(line) > block_size // 2:
            expected.rejects["row_too_long"] += 1
        elif line:
            lines.append(line)
    # surrogateescape keeps every byte, so each field can be checked as the bytes it was.
    text = b"\n".join(lines).decode("utf-8", "surrogateescape")
    for fields in csv.reader(io.StringIO(text, newline="")):
        if len(fields) != len(names):
            expected.rejects["wrong_field_count"] += 1
            continue
        raw = {c: fields[position[c]].encode("utf-8", "surrogateescape") for c in REQUIRED_COLUMNS}
        msisdn, problem = _msisdn(raw["msisdn"])
        values = []
        for column in REQUIRED_COLUMNS[1:]:
            value, reason = _integer(raw[column])
            problem = problem or reason
            values.append(value)
        if problem is None and values[2] + values[3] > INT64_MAX:
            problem = "integer_out_of_range"
        if problem is not None:
            expected.rejects[problem] += 1
            continue
        cell_id, service_id, uplink, downlink = values
        expected.accepted += 1
        expected.service_bytes[service_id] += uplink + downlink
        expected.cell_users[cell_id].add(msisdn)
    return expected


# --- generated files ---------------------------------------------------------

SPACES = st.sampled_from(["", " ", "\t", "  ", "\u00a0", "\u3000", "\x0b"])
ODD_TEXT = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=12
)
MSISDN = st.one_of(
    st.from_regex(r"\+?[0-9]{8,16}", fullmatch=True),
    st.from_regex(r"\+?[0-9]{8,16}", fullmatch=True),
    st.builds(
        lambda a, m, b: a + m + b, SPACES, st.from_regex(r"[0-9]{6}", fullmatch=True), SPACES
    ),
    ODD_TEXT,
    st.sampled_from(["", " ", "a\x00b", "x\x7f", "\x1fx", "1,2", 'say "hi"', "ü" * 64, "ü" * 65]),
    st.integers(60, 70).map(lambda n: "7" * n),
    st.just("9" * 5000),
)
INTEGER = st.one_of(
    st.integers(0, 10**6).map(str),
    st.integers(0, 10**6).map(str),
    st.integers(0, INT64_MAX).map(str),
    st.integers(INT64_MAX - 3, INT64_MAX + 3).map(str),
    st.integers(2**63, 10**30).map(str),
    st.integers(-(10**20), -1).map(str),
    st.builds(
        lambda a, n, b: a + str(n) + b,
        st.sampled_from(["", " ", "\t", " \t"]),
        st.integers(0, 999),
        st.sampled_from(["", " ", "\t", "\t "]),
    ),
    st.sampled_from(
        [
            "",
            " ",
            "-0",
            "+5",
            "1e5",
            "0x10",
            "1.0",
            "1 2",
            "\u0663",
            "\uff11\uff12",
            "\u00b2",
            "abc",
            "\x00",
            "0" * 40 + "12",
            "00",
            "9" * 19,
            "9" * 20,
            "\u00a07",
        ]
    ),
    ODD_TEXT,
)


@st.composite
def field_bytes(draw: st.DrawFn, text: st.SearchStrategy[str]) -> bytes:
    raw = draw(text).encode("utf-8")
    if draw(st.integers(0, 15)) == 0:  # now and then, bytes that are not UTF-8
        cut = draw(st.integers(0, len(raw)))
        raw = (
            raw[:cut]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]))
            + raw[cut:]
        )
    if b"\r" in raw or b"\n" in raw:
        raw = raw.replace(b"\r", b"").replace(b"\n", b"")
    return raw


def quoted(raw: bytes, always: bool) -> bytes:
    if always or b"," in raw or b'"' in raw:
        return b'"' + raw.replace(b'"', b'""') + b'"'
    return raw


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """A file with a usable header and rows good, bad and ragged."""
    extra = draw(st.lists(st.sampled_from(["imsi", "note", "apn", "x"]), max_size=2, unique=True))
    names = draw(st.permutations([*REQUIRED_COLUMNS, *extra]))
    shown = [
        draw(st.sampled_from([n, n.upper(), f" {n} ", n.title()])) if draw(st.booleans()) else n
        for n in names
    ]
    header = ",".join(shown).encode()
    if draw(st.integers(0, 9)) == 0:
        header = b"\xef\xbb\xbf" + header
    strategy = {"msisdn": MSISDN, **dict.fromkeys(REQUIRED_COLUMNS[1:], INTEGER)}
    rows = []
    for _ in range(draw(st.integers(0, 25))):
        cells = [
            quoted(draw(field_bytes(strategy.get(name, ODD_TEXT))), draw(st.integers(0, 7)) == 0)
            for name in names
        ]
        shape = draw(st.integers(0, 11))
        if shape == 0:
            cells.append(b"surplus")
        elif shape == 1:
            cells = cells[: draw(st.integers(0, len(cells) - 1))]
        rows.append(b",".join(cells))
        if draw(st.integers(0, 12)) == 0:
            rows.append(b"")
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    ending = newline if draw(st.booleans()) else b""
    return header + b"\n" + newline.join(rows) + (ending if rows else b"")


def check_against_validator(outcome, expected: Expected) -> None:
    assert outcome.error is None, outcome.error
    assert outcome.stats.rows_accepted == expected.accepted
    assert dict(outcome.stats.rejects) == dict(expected.rejects)
    assert outcome.partial.service_bytes.to_dict() == dict(expected.service_bytes)
    cells = dict(outcome.partial.top_cells(10**6))
    assert cells == {cell: len(users) for cell, users in expected.cell_users.items()}


@pytest.mark.slow
@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=csv_files(), block_size=st.sampled_from(BLOCK_SIZES), gzipped=st.booleans())
@example(
    data=b"msisdn,cell_id,service_id,bytes_uplink,bytes_downlink\n"
    + b"9" * 5000
    + b",1,1,1,1\n1,2,3,4,5\n",
    block_size=4096,
    gzipped=False,
)
@example(
    data=b"msisdn,cell_id,service_id,bytes_uplink,bytes_downlink\n1,1,1,9223372036854775807,1\n",
    block_size=256,
    gzipped=False,
)
def test_the_reader_rejects_exactly_the_bad_rows(
    data: bytes, block_size: int, gzipped: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("hostile") / ("f.csv.gz" if gzipped else "f.csv")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    outcome = aggregate_file(path, hash_key=HASH_KEY, block_size=block_size)
    check_against_validator(outcome, validate(data, block_size=block_size))


# --- files that cannot be read at all -----------------------------------------

GOOD = b"msisdn,cell_id,service_id,bytes_uplink,bytes_downlink\n1,2,3,4,5\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file: no header row"),
        (b"\n\n  \n", "empty file: no header row"),
        (
            b"msisdn,cell_id,service_id,bytes_uplink\n1,2,3,4\n",
            "missing required column(s): bytes_downlink",
        ),
        (b"a,b\n1,2\n", "missing required column(s): msisdn, cell_id, service_id, bytes_uplink"),
        (
            b"msisdn,msisdn,cell_id,service_id,bytes_uplink,bytes_downlink\n",
            "column(s) appear more than once: msisdn",
        ),
        (
            b"\xffmsisdn,cell_id,service_id,bytes_uplink,bytes_downlink\n",
            "the header row is not UTF-8 text",
        ),
        (b"x" * 70_000, "no header row within the first 64 KiB: not a CSV file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "the header row is not UTF-8 text"),
    ],
)
def test_a_file_that_cannot_be_read_is_failed_with_its_reason(
    data: bytes, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    outcome = aggregate_file(path, hash_key=HASH_KEY)
    assert outcome.error is not None
    assert outcome.error.startswith(message)


@hypothesis_settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 200), tail=st.binary(max_size=8))
def test_truncated_or_corrupt_gzip_fails_the_file_cleanly(
    cut: int, tail: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    rows = GOOD + GOOD.partition(b"\n")[2] * 19
    packed = gzip.compress(rows)
    damaged = packed[: min(cut, len(packed) - 1)] + tail
    path = tmp_path_factory.mktemp("gz") / "f.csv.gz"
    path.write_bytes(damaged)
    outcome = aggregate_file(path, hash_key=HASH_KEY)
    try:
        restored = gzip.decompress(damaged)
    except (OSError, EOFError, zlib.error):
        restored = None
    if restored == rows:  # the tail happened to repair the stream (e.g. the missing last byte)
        assert (outcome.error, outcome.stats.rows_accepted) == (None, 20)
        return
    assert outcome.error is not None
    assert outcome.error.startswith(
        ("cannot decompress or read the file", "empty file: no header row")
    ), outcome.error


def test_a_header_only_file_is_valid_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(GOOD.split(b"\n")[0] + b"\r\n")
    outcome = aggregate_file(path, hash_key=HASH_KEY)
    assert (outcome.error, outcome.stats.rows_accepted, outcome.stats.rows_rejected) == (None, 0, 0)


# --- the command, end to end -------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db
@hypothesis_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=csv_files(), damage=st.sampled_from(["none", "gzip", "truncated_gzip", "no_header"]))
def test_the_command_never_crashes_and_records_each_problem(
    data: bytes, damage: str, input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    database_clear()
    for old in input_folder.path.iterdir():
        old.unlink()
    name = file_name(interval_start=utc("2026-02-01T10:00"), part=0, gzipped=damage != "none")
    stored = {
        "none": data,
        "gzip": gzip.compress(data),
        "truncated_gzip": gzip.compress(data)[:-9],
        "no_header": gzip.compress(b"msisdn;cell\n1;2\n"),
    }[damage]
    input_folder.write_raw(name, stored)

    result = run_update("2026-02-01T11:00Z", "--no-progress")
    record = InputFileRecord.objects.get(name=name)
    if damage in ("none", "gzip"):
        expected = validate(data, block_size=settings.KPI_READ_BLOCK_BYTES)
        assert result.exit_code == 0, result.stderr
        assert record.status == InputFileStatus.COUNTED
        assert (record.rows_accepted, record.rejects) == (expected.accepted, dict(expected.rejects))
        assert f"rows rejected: {expected.rejects.total()}," in result.stdout
    else:
        assert result.exit_code == 1
        assert record.status == InputFileStatus.FAILED
        assert record.error
        assert f"failed file {name}: {record.error}" in result.stderr


# --- names that try to leave the input folder --------------------------------


@pytest.mark.django_db
def test_names_and_links_never_lead_outside_the_input_folder(
    tmp_path: Path, input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    folder = input_folder.path
    outside = tmp_path / "secret"
    outside.mkdir()
    target = outside / file_name(interval_start=utc("2026-01-01T00:00"), part=0)
    target.write_bytes(GOOD)
    good_name = file_name(interval_start=utc("2026-01-01T00:05"), part=0)
    (folder / good_name).write_bytes(GOOD)
    # A link with a valid name pointing outside, a link to a folder, and a link to /etc/passwd.
    (folder / file_name(interval_start=utc("2026-01-01T00:10"), part=0)).symlink_to(target)
    (folder / file_name(interval_start=utc("2026-01-01T00:15"), part=0)).symlink_to(outside)
    (folder / file_name(interval_start=utc("2026-01-01T00:20"), part=0)).symlink_to("/etc/passwd")
    # A sub-folder with a valid name, and names no file system allows but a crafted list might.
    (folder / file_name(interval_start=utc("2026-01-01T00:25"), part=0)).mkdir()

    found = scan_input_dir(folder)
    assert [f.name for f in found] == [good_name]
    assert all(input_parent(f.path) == folder for f in found)
    result = run_update("2026-01-01T03:00Z")
    assert result.exit_code == 0
    assert list(InputFileRecord.objects.values_list("name", flat=True)) == [good_name]


@pytest.mark.parametrize(
    "name",
    [
        "../network.records-1767225901000.0.csv",
        "/etc/network.records-1767225901000.0.csv",
        "..%2Fnetwork.records-1767225901000.0.csv",
        "network.records-1767225901000.0.csv/../../x",
        "net/../work.records-1767225901000.0.csv",
        "network.records-1767225901000.0.csv\x00.txt",
        "network.re..cords-1767225901000.0.csv",
    ],
)
def test_a_name_crafted_to_escape_is_not_a_raw_file(name: str) -> None:
    from kpis.pipeline import parse_file_name

    assert parse_file_name(name) is None
