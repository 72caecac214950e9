"""The pure pipeline on tiny real files, without a database."""

from __future__ import annotations

import csv
import gzip
import os
import random
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kpis.pipeline import (
    Partial,
    RejectReason,
    aggregate_file,
    interval_start_for_epoch_ms,
    key_id_for,
    parse_file_name,
    scan_input_dir,
    subscriber_hash_key,
)
from kpis.pipeline.aggregates import IncompatiblePartial
from kpis.tests.conftest import HEADER, InputFolder, csv_bytes, utc

KEY = subscriber_hash_key("k" * 40)


def read(path: Path, **kwargs: object) -> Partial:
    outcome = aggregate_file(path, hash_key=KEY, **kwargs)  # type: ignore[arg-type]
    assert outcome.error is None, outcome.error
    assert outcome.partial is not None
    return outcome.partial


class TestFileNames:
    def test_it_parses_the_contract_example(self) -> None:
        assert parse_file_name("network.records-1626566720000.0.csv") == 1626566720000
        assert parse_file_name("network.records-1626566720000.12.csv.gz") == 1626566720000

    @pytest.mark.parametrize(
        "name",
        [
            "network.records-1626566720000.0.csv.tmp",
            "README",
            "network.records-162656672000.0.csv",  # 12 digits
            "network.records-1626566720000.csv",
            "../network.records-1626566720000.0.csv",
            "network.records-1626566720000.0.CSV",
            "network.records-1626566720000.0.csv.gz.part",
        ],
    )
    def test_it_ignores_other_names(self, name: str) -> None:
        assert parse_file_name(name) is None

    def test_files_closed_in_the_next_five_minutes_belong_to_the_interval(self) -> None:
        # 00:05:00.000 to 00:09:59.999 all belong to 00:00-00:05.
        first = int(utc("2021-07-18T00:05").timestamp() * 1000)
        assert interval_start_for_epoch_ms(first) == utc("2021-07-18T00:00")
        assert interval_start_for_epoch_ms(first + 299_999) == utc("2021-07-18T00:00")
        assert interval_start_for_epoch_ms(first + 300_000) == utc("2021-07-18T00:05")
        assert interval_start_for_epoch_ms(first - 1) == utc("2021-07-17T23:55")

    def test_scan_lists_only_regular_contract_files_in_order(
        self, input_folder: InputFolder, tmp_path: Path
    ) -> None:
        later = input_folder.write("2021-07-18T00:05", [])
        earlier = input_folder.write("2021-07-18T00:00", [], part=1)
        (input_folder.path / "notes.txt").write_text("x")
        (input_folder.path / (later.name + ".tmp")).write_text("x")
        outside = tmp_path / "secret.csv"
        outside.write_text("msisdn\n")
        os.symlink(outside, input_folder.path / "network.records-1626566720000.7.csv")
        (input_folder.path / "network.records-1626566720000.8.csv").mkdir()

        found = scan_input_dir(input_folder.path)

        assert [f.name for f in found] == [earlier.name, later.name]
        assert found[0].interval_start == utc("2021-07-18T00:00")
        assert found[0].size == earlier.stat().st_size


class TestReading:
    def test_it_sums_bytes_per_service_and_counts_distinct_users_per_cell(
        self, input_folder: InputFolder
    ) -> None:
        path = input_folder.write(
            "2021-07-18T00:00",
            [
                ("491700000001", 10, 1, 100, 1000),
                ("491700000001", 10, 2, 5, 5),
                ("491700000002", 10, 1, 1, 1),
                ("491700000001", 20, 1, 3, 4),
                (" 491700000001 ", 20, 3, 0, 0),  # the same subscriber, trimmed
            ],
        )
        partial = read(path)
        assert partial.service_bytes.to_dict() == {1: 1109, 2: 10, 3: 0}
        assert partial.top_services(2) == [(1, 1109), (2, 10)]
        assert partial.top_cells(5) == [(10, 2), (20, 1)]

    def test_columns_may_come_in_any_order_with_extra_columns(
        self, input_folder: InputFolder
    ) -> None:
        header = ("extra", "bytes_downlink", "Cell_ID", "msisdn", "bytes_uplink", "service_id")
        path = input_folder.write("2021-07-18T00:00", [("x", 7, 5, "+4917", 3, 9)], header=header)
        partial = read(path)
        assert partial.service_bytes.to_dict() == {9: 10}
        assert partial.top_cells(1) == [(5, 1)]

    def test_byte_counts_above_two_to_the_31_stay_exact(self, input_folder: InputFolder) -> None:
        big = 160_000_000_000
        path = input_folder.write(
            "2021-07-18T00:00", [("a", 1, 1, big, big + 1), ("b", 1, 1, 2**62, 0)]
        )
        assert read(path).service_bytes.to_dict() == {1: 2 * big + 1 + 2**62}

    def test_a_header_only_file_is_valid_and_empty(self, input_folder: InputFolder) -> None:
        outcome = aggregate_file(input_folder.write("2021-07-18T00:00", []), hash_key=KEY)
        assert outcome.error is None
        assert outcome.stats.rows_accepted == 0
        assert outcome.partial is not None and outcome.partial.top_cells(3) == []
        restored = Partial.from_bytes(outcome.partial.to_bytes())
        assert restored.top_cells(3) == restored.top_services(3) == []

    def test_gzipped_files_read_like_plain_ones(self, input_folder: InputFolder) -> None:
        rows = [("a", 1, 1, 1, 1), ("b", 2, 2, 2, 2)]
        plain = read(input_folder.write("2021-07-18T00:00", rows))
        zipped = read(input_folder.write("2021-07-18T00:00", rows, part=1, gzipped=True))
        assert plain.service_bytes.equals(zipped.service_bytes)
        assert plain.top_cells(3) == zipped.top_cells(3)

    def test_bad_rows_are_rejected_by_reason_and_the_rest_counted(
        self, input_folder: InputFolder
    ) -> None:
        data = csv_bytes(
            [
                ("ok", 1, 1, 10, 10),
                ("short", 1, 1),
                ("", 1, 1, 1, 1),
                ("m", "", 1, 1, 1),
                ("m", "x1", 1, 1, 1),
                ("m", "0x10", 1, 1, 1),
                ("m", 1, 1, "1.5", 1),
                ("m", 1, 1, -1, 1),
                ("m", 1, 1, 1, 2**63),
                ("m", 1, 1, 2**63 - 1, 1),  # each fits, the sum does not
                ("bad\x01id", 1, 1, 1, 1),
                ("x" * 65, 1, 1, 1, 1),
                ("ok2", " 2 ", "0003", 5, 5),
            ]
        )
        data += "caf\u00e9,1,1,1,1\n".encode("latin-1")  # not UTF-8
        outcome = aggregate_file(
            input_folder.write_raw("a.records-1626566720000.0.csv", data), hash_key=KEY
        )

        assert outcome.error is None
        assert outcome.stats.rows_accepted == 2
        assert dict(outcome.stats.rejects) == {
            RejectReason.WRONG_FIELD_COUNT: 1,
            RejectReason.MISSING_VALUE: 2,
            RejectReason.MALFORMED_INTEGER: 3,
            RejectReason.NEGATIVE_INTEGER: 1,
            RejectReason.INTEGER_OUT_OF_RANGE: 2,
            RejectReason.INVALID_MSISDN: 3,
        }
        assert outcome.partial is not None
        assert outcome.partial.service_bytes.to_dict() == {1: 20, 3: 10}
        assert outcome.partial.top_cells(3) == [(1, 1), (2, 1)]

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"", "empty file"),
            (
                b"msisdn,cell_id,service_id,bytes_uplink\n1,2,3,4\n",
                "missing required column(s): bytes_downlink",
            ),
            (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10, "header row is not UTF-8"),
            (
                b"msisdn,msisdn,cell_id,service_id,bytes_uplink,bytes_downlink\n",
                "more than once: msisdn",
            ),
        ],
        ids=["empty", "missing-column", "binary", "repeated-column"],
    )
    def test_an_unreadable_file_reports_why(
        self, input_folder: InputFolder, content: bytes, message: str
    ) -> None:
        path = input_folder.write_raw("network.records-1626566720000.0.csv", content)
        outcome = aggregate_file(path, hash_key=KEY)
        assert outcome.partial is None
        assert outcome.error is not None and message in outcome.error

    def test_a_truncated_gzip_file_fails_as_a_whole(self, input_folder: InputFolder) -> None:
        data = gzip.compress(csv_bytes([("a", 1, 1, 1, 1)] * 5000))
        path = input_folder.write_raw(
            "network.records-1626566720000.0.csv.gz", data[: len(data) // 2]
        )
        outcome = aggregate_file(path, hash_key=KEY)
        assert outcome.partial is None
        assert outcome.error is not None and "decompress" in outcome.error

    def test_small_blocks_give_the_same_result_as_one_block(
        self, input_folder: InputFolder
    ) -> None:
        rows = [(f"s{i % 37}", i % 11, i % 5, i, 2 * i) for i in range(20_000)]
        path = input_folder.write("2021-07-18T00:00", rows)
        whole = read(path)
        blocks = read(path, block_size=64 * 1024)
        assert whole.service_bytes.sort_index().equals(blocks.service_bytes.sort_index())
        assert whole.top_cells(20) == blocks.top_cells(20)

    def test_the_content_hash_covers_the_stored_bytes(self, input_folder: InputFolder) -> None:
        import hashlib

        path = input_folder.write("2021-07-18T00:00", [("a", 1, 1, 1, 1)], gzipped=True)
        outcome = aggregate_file(path, hash_key=KEY)
        assert outcome.stats.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


class TestPartials:
    def test_merging_counts_a_subscriber_once_per_cell(self, input_folder: InputFolder) -> None:
        first = read(input_folder.write("2021-07-18T00:00", [("a", 1, 1, 5, 5), ("b", 1, 2, 1, 1)]))
        second = read(
            input_folder.write("2021-07-18T00:05", [("a", 1, 2, 7, 0), ("c", 2, 1, 1, 0)])
        )
        merged = Partial.merge([first, second], key_id=key_id_for(KEY))
        assert merged.service_bytes.to_dict() == {1: 11, 2: 9}
        assert merged.top_cells(3) == [(1, 2), (2, 1)]

    def test_ties_go_to_the_smaller_id(self) -> None:
        partial = Partial(key_id="k", service_bytes=pd.Series({5: 10, 3: 10, 9: 11}, dtype=object))
        assert partial.top_services(3) == [(9, 11), (3, 10), (5, 10)]

    def test_a_partial_survives_serialisation(self, input_folder: InputFolder) -> None:
        partial = read(
            input_folder.write("2021-07-18T00:00", [("a", 1, 1, 2**62, 5), ("b", 3, 2, 1, 1)])
        )
        restored = Partial.from_bytes(partial.to_bytes())
        assert restored.service_bytes.to_dict() == partial.service_bytes.to_dict()
        assert restored.top_cells(3) == partial.top_cells(3)
        assert restored.key_id == partial.key_id

    def test_state_made_with_another_key_is_refused(self, input_folder: InputFolder) -> None:
        partial = read(input_folder.write("2021-07-18T00:00", [("a", 1, 1, 1, 1)]))
        with pytest.raises(IncompatiblePartial):
            Partial.merge([partial], key_id=key_id_for(subscriber_hash_key("other" * 10)))

    def test_stored_state_holds_no_msisdn_in_the_clear(self, input_folder: InputFolder) -> None:
        partial = read(input_folder.write("2021-07-18T00:00", [("491799887766", 1, 1, 1, 1)]))
        assert b"491799887766" not in partial.to_bytes()


def test_intervals_are_five_minutes_apart() -> None:
    start = interval_start_for_epoch_ms(1626566720000)
    assert interval_start_for_epoch_ms(1626566720000 + 300_000) - start == timedelta(minutes=5)
    assert HEADER[0] == "msisdn"


class TestFastPaths:
    """The optimised paths give exactly what a straightforward computation gives."""

    @pytest.mark.parametrize(
        "cell_ids",
        [(0, 40), (2**32 - 5, 2**32 + 5), (2**62, 2**62 + 30)],
        ids=["small-cells", "around-2-32", "too-large-to-pack"],
    )
    def test_packed_pairs_match_a_straightforward_count(self, cell_ids) -> None:
        from kpis.pipeline import PartialBuilder, Records

        rng = np.random.default_rng(11)
        low, high = cell_ids
        # Blocks and files share subscribers; distinct raw values of a block may share a
        # hash, as " a" and "a" do once trimmed.
        population = rng.integers(0, 2**64, size=500, dtype=np.uint64)
        expected_pairs: set[tuple[int, int]] = set()
        expected_bytes: dict[int, int] = {}
        partials = []
        for _file in range(4):
            builder = PartialBuilder(key_id="k")
            for _block in range(3):
                hashes = rng.choice(population, size=300)
                rows = int(rng.integers(0, 2000))
                records = Records(
                    subscriber_code=rng.integers(0, 300, size=rows),
                    subscriber_hashes=hashes,
                    cell_id=rng.integers(low, high, size=rows, dtype=np.int64),
                    service_id=rng.integers(0, 2**40, size=rows, dtype=np.int64)
                    % np.int64(rng.choice([7, 2**40])),
                    total_bytes=rng.integers(0, 2**62, size=rows, dtype=np.int64),
                )
                builder.add(records)
                subscribers = records.subscriber.tolist()
                expected_pairs.update(zip(records.cell_id.tolist(), subscribers, strict=True))
                for service, total in zip(
                    records.service_id.tolist(), records.total_bytes.tolist(), strict=True
                ):
                    expected_bytes[service] = expected_bytes.get(service, 0) + total
            partials.append(Partial.from_bytes(builder.build().to_bytes()))

        merged = Partial.merge(partials, key_id="k")

        users: dict[int, int] = {}
        for cell, _subscriber in expected_pairs:
            users[cell] = users.get(cell, 0) + 1
        ranked = sorted(users.items(), key=lambda item: (-item[1], item[0]))
        assert merged.service_bytes.to_dict() == expected_bytes
        assert merged.top_cells(10) == ranked[:10]
        assert dict(merged.top_cells(10**6)) == users
        pairs = merged.pairs
        stored = set(zip(pairs["cell_id"].tolist(), pairs["subscriber"].tolist(), strict=True))
        assert stored == expected_pairs and len(pairs) == len(expected_pairs)

    def test_state_in_any_pair_order_merges_exactly(self) -> None:
        def partial(pairs: list[tuple[int, int]]) -> Partial:
            cells, subscribers = zip(*pairs, strict=True)
            frame = pd.DataFrame(
                {
                    "cell_id": np.array(cells, np.int64),
                    "subscriber": np.array(subscribers, np.uint64),
                }
            )
            return Partial(key_id="k", pairs=frame)

        first = partial([(1, 9), (2, 3), (1, 3)])  # not ordered by subscriber
        second = partial([(1, 3), (3, 2**64 - 1), (2, 9)])
        merged = Partial.merge([first, second], key_id="k")
        assert merged.top_cells(5) == [(1, 2), (2, 2), (3, 1)]
        restored = Partial.merge([Partial.from_bytes(first.to_bytes()), second], key_id="k")
        assert restored.top_cells(5) == merged.top_cells(5)

    @pytest.mark.parametrize("compact_rows", [4_000_000, 500], ids=["default", "compacting"])
    def test_a_file_in_many_blocks_matches_a_straightforward_count(
        self, input_folder: InputFolder, monkeypatch: pytest.MonkeyPatch, compact_rows: int
    ) -> None:
        from kpis.pipeline import aggregates

        # A small threshold deduplicates the pending pairs many times within the file.
        monkeypatch.setattr(aggregates, "_COMPACT_ROWS", compact_rows)
        rng = random.Random(3)
        msisdns = ["7", "007", "+4917", " 4917 ", "4917", "a b", "491700000001", "\u00e9t\u00e9"]
        msisdns += [str(491700000000 + n) for n in range(300)]
        rows = [
            (
                rng.choice(msisdns),
                rng.choice([1, 2, 3, 2**40, 2**63 - 1]),
                rng.randrange(0, 5),
                rng.randrange(0, 10**12),
                rng.randrange(0, 10**12),
            )
            for _ in range(30_000)
        ]
        path = input_folder.write("2021-07-18T00:00", rows)
        expected_users: dict[int, set[str]] = {}
        expected_bytes: dict[int, int] = {}
        for msisdn, cell, service, up, down in rows:
            expected_users.setdefault(cell, set()).add(msisdn.strip())
            expected_bytes[service] = expected_bytes.get(service, 0) + up + down

        partial = read(path, block_size=64 * 1024)

        counts = sorted(
            ((cell, len(users)) for cell, users in expected_users.items()),
            key=lambda item: (-item[1], item[0]),
        )
        assert partial.service_bytes.to_dict() == expected_bytes
        assert partial.top_cells(10) == counts

    def test_integer_fast_path_and_row_by_row_checks_agree(self, input_folder: InputFolder) -> None:
        odd_but_valid = [(f"s{i}", " 5", "\t7", "0003", f"{i} ") for i in range(12_000)]
        bad = [("x", "-0", 1, 1, 1), ("y", "", 1, 1, 1), ("z", "+5", 1, 1, 1)]
        plain = input_folder.write("2021-07-18T00:00", odd_but_valid)
        # Each bad row in a piece of its own (the first piece holds the 64 KiB read with
        # the header): the others cannot send it down the exact path.
        spread = [*odd_but_valid[:6000], bad[0], *odd_but_valid[6000:9000], bad[1]]
        spread += [*odd_but_valid[9000:], bad[2]]
        mixed = input_folder.write("2021-07-18T00:05", spread)

        fast = aggregate_file(plain, hash_key=KEY, block_size=4096)
        checked = aggregate_file(mixed, hash_key=KEY, block_size=4096)

        assert fast.partial is not None and checked.partial is not None
        expected_bytes = {7: 12_000 * 3 + sum(range(12_000))}
        assert fast.partial.service_bytes.to_dict() == expected_bytes
        assert checked.partial.service_bytes.to_dict() == expected_bytes
        assert fast.partial.top_cells(2) == checked.partial.top_cells(2) == [(5, 12_000)]
        assert fast.stats.rejects == {}
        assert dict(checked.stats.rejects) == {
            RejectReason.NEGATIVE_INTEGER: 1,
            RejectReason.MISSING_VALUE: 1,
            RejectReason.MALFORMED_INTEGER: 1,
        }

    def test_nineteen_digit_values_take_the_exact_path(self, input_folder: InputFolder) -> None:
        path = input_folder.write(
            "2021-07-18T00:00",
            [("a", 2**63 - 1, 1, 0, 5), ("b", "0000000000000000000007", 1, 1, 0)],
        )
        partial = read(path)
        assert partial.top_cells(3) == [(7, 1), (2**63 - 1, 1)]
        assert partial.service_bytes.to_dict() == {1: 6}


class TestPandasEngine:
    def test_subscribers_are_hashed_by_pandas_hash_array_of_the_trimmed_msisdn(
        self, input_folder: InputFolder
    ) -> None:
        msisdns = [" 491700000001", "491700000001", "+4917", "\u00e9t\u00e9\t", "x" * 64, "7"]
        path = input_folder.write("2021-07-18T00:00", [(msisdn, 1, 1, 1, 1) for msisdn in msisdns])
        partial = read(path)
        distinct = sorted({msisdn.strip() for msisdn in msisdns})
        expected = pd.util.hash_array(np.array(distinct, dtype=object), hash_key=KEY)
        assert sorted(partial.pairs["subscriber"].tolist()) == sorted(expected.tolist())

    def test_the_pipeline_has_no_hand_written_hash_and_keeps_pandas_objects(
        self, input_folder: InputFolder
    ) -> None:
        import importlib.util

        assert importlib.util.find_spec("kpis.pipeline.siphash") is None
        partial = read(input_folder.write("2021-07-18T00:00", [("a", 1, 1, 1, 1)]))
        assert isinstance(partial.service_bytes, pd.Series)
        assert isinstance(partial.pairs, pd.DataFrame)


class TestStoredState:
    FIXTURES = Path(__file__).parent / "fixtures"
    # The fixture state was written by format 1 (Arrow IPC, flat pairs) from the
    # first input file below, with this key.
    FIXTURE_KEY = subscriber_hash_key("fixture-secret")

    def fixture_read(self, part: int) -> Partial:
        path = self.FIXTURES / f"network.records-1626566700000.{part}.csv"
        outcome = aggregate_file(path, hash_key=self.FIXTURE_KEY)
        assert outcome.partial is not None
        return outcome.partial

    def test_a_state_of_format_1_merges_with_a_new_one_as_a_fresh_computation(self) -> None:
        old = Partial.from_bytes(
            (self.FIXTURES / "state-v1-network.records-1626566700000.0.arrow").read_bytes()
        )
        first, second = self.fixture_read(0), self.fixture_read(1)
        key_id = key_id_for(self.FIXTURE_KEY)

        # The hashes did not change: the old state holds exactly the pairs read today.
        assert set(old.pairs.itertuples(index=False, name=None)) == set(
            first.pairs.itertuples(index=False, name=None)
        )
        mixed = Partial.merge([old, Partial.from_bytes(second.to_bytes())], key_id=key_id)
        fresh = Partial.merge([first, second], key_id=key_id)

        assert mixed.service_bytes.to_dict() == fresh.service_bytes.to_dict()
        assert max(fresh.service_bytes.tolist()) > 2**64  # the exact path for large sums
        assert mixed.top_services(100) == fresh.top_services(100)
        assert mixed.top_cells(10**6) == fresh.top_cells(10**6)
        # And both are right: distinct trimmed msisdns per cell, counted by hand.
        users: dict[int, set[str]] = {}
        for part in (0, 1):
            path = self.FIXTURES / f"network.records-1626566700000.{part}.csv"
            for row in list(csv.reader(path.read_text().splitlines()))[1:]:
                msisdn, numbers = row[0].strip(), row[1:]
                if msisdn.isprintable() and msisdn and all(n.isdigit() for n in numbers):
                    users.setdefault(int(numbers[0]), set()).add(msisdn)
        counted = sorted(((c, len(u)) for c, u in users.items()), key=lambda i: (-i[1], i[0]))
        assert mixed.top_cells(10**6) == counted

    def test_state_is_parquet_with_zstd_sorted_subscribers_and_a_format_version(self) -> None:
        data = self.fixture_read(1).to_bytes()
        parquet = pq.ParquetFile(pa.BufferReader(data))
        assert parquet.schema_arrow.metadata[b"format"] == b"2"
        assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
        subscribers = parquet.read().column("subscriber").to_numpy()
        assert (subscribers[1:] > subscribers[:-1]).all()  # sorted, each subscriber once

    def test_an_unknown_format_is_refused(self) -> None:
        table = pa.table({"x": [1]}).replace_schema_metadata({b"format": b"99"})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        with pytest.raises(IncompatiblePartial):
            Partial.from_bytes(sink.getvalue().to_pybytes())


def test_hexadecimal_integers_are_malformed_even_in_a_clean_block(
    input_folder: InputFolder,
) -> None:
    # The CSV parser's own int64 conversion reads 0x10 as 16; the contract says decimal.
    path = input_folder.write(
        "2021-07-18T00:00", [("a", "0x10", 1, 1, 1), ("b", 2, "0X1", 1, 1), ("c", 3, 1, 1, 1)]
    )
    outcome = aggregate_file(path, hash_key=KEY)
    assert dict(outcome.stats.rejects) == {RejectReason.MALFORMED_INTEGER: 2}
    assert outcome.stats.rows_accepted == 1


def test_a_row_longer_than_half_a_block_is_rejected_not_the_file(
    input_folder: InputFolder,
) -> None:
    rows = [("a" * 100_000, 1, 1, 1, 1), ("b", 2, 1, 1, 1)]
    outcome = aggregate_file(
        input_folder.write("2021-07-18T00:00", rows), hash_key=KEY, block_size=64 * 1024
    )
    assert outcome.error is None
    assert dict(outcome.stats.rejects) == {RejectReason.ROW_TOO_LONG: 1}
    assert outcome.stats.rows_accepted == 1


def test_every_name_the_package_loads_lazily_is_exported_and_found() -> None:
    import importlib

    import kpis.pipeline as pipeline

    lazy: dict[str, str] = pipeline._LAZY
    assert set(lazy) <= set(pipeline.__all__)
    assert set(pipeline.__all__) <= set(dir(pipeline))
    for name, module in lazy.items():
        assert getattr(pipeline, name) is getattr(importlib.import_module(module), name)
