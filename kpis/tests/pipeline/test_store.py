"""The state store: partitioned Parquet states on a real folder, merged part by part."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from kpis.pipeline import key_id_for
from kpis.pipeline.aggregates import IncompatiblePartial, Partial, _distinct_pairs, service_totals
from kpis.pipeline.state_format import cell_partition, check_partitions
from kpis.pipeline.store import StateStore
from kpis.pipeline.tasks import Ranking, file_to_state, merge_plan, states_merge
from kpis.tests.conftest import HEADER


def random_partial(seed: int, rows: int, key_id: str = "k") -> Partial:
    rng = np.random.default_rng(seed)
    cell = (rng.zipf(1.3, rows) % 3000).astype(np.int64)
    subscribers = rng.integers(0, 2**63, rows // 3, dtype=np.uint64)
    subscriber = subscribers[rng.integers(0, len(subscribers), rows)]
    return Partial(
        key_id=key_id,
        service_bytes=service_totals(rng.integers(0, 60, rows), rng.integers(0, 10**6, rows)),
        pairs=_distinct_pairs([cell], [subscriber]),
    )


def merged(store: StateStore, keys: list[str], *, partitions: int, tasks: int) -> Ranking:
    return Ranking.of(
        states_merge(
            store.url,
            keys,
            parts=parts,
            partitions=partitions,
            top_n=10,
            key_id="k",
            with_totals=index == 0,
        )
        for index, parts in enumerate(merge_plan(partitions, tasks))
    )


@pytest.mark.parametrize(("partitions", "tasks"), [(1, 1), (16, 1), (16, 4), (64, 64)])
def test_a_partitioned_merge_equals_the_unpartitioned_one(
    tmp_path: Path, partitions: int, tasks: int
) -> None:
    store = StateStore(str(tmp_path))
    partials = [random_partial(seed, 50_000) for seed in range(3)]
    keys = [
        store.write(f"2021-07-18T00/f{i}.0", p, partitions=partitions).key
        for i, p in enumerate(partials)
    ]
    whole = Partial.merge(partials, key_id="k")
    ranking = merged(store, keys, partitions=partitions, tasks=tasks)
    assert ranking.top_cells(10) == whole.top_cells(10)
    assert ranking.top_services(10) == whole.top_services(10)


def test_states_written_with_another_number_of_parts_still_merge_exactly(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    partials = [random_partial(seed, 20_000) for seed in range(2)]
    keys = [store.write("h/a.0", partials[0], partitions=8).key]
    keys.append(store.write("h/b.0", partials[1], partitions=32).key)
    whole = Partial.merge(partials, key_id="k")
    assert merged(store, keys, partitions=16, tasks=3).top_cells(10) == whole.top_cells(10)


def test_a_state_reads_back_whole_and_keys_never_collide(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    partial = random_partial(7, 10_000)
    first = store.write("2021-07-18T00/f.0", partial, partitions=16)
    second = store.write("2021-07-18T00/f.0", partial, partitions=16)
    assert first.key != second.key
    assert first.pairs == len(partial.pairs)
    back = store.read(first.key)
    assert back.top_cells(5) == partial.top_cells(5)
    assert back.top_services(5) == partial.top_services(5)
    assert len(back.pairs) == len(partial.pairs)
    assert sorted(store.keys("2021-07-18T00")) == sorted([first.key, second.key])
    store.delete([first.key, "2021-07-18T00/gone.parquet"])
    assert store.keys("2021-07-18T00") == [second.key]
    store.delete_prefix("2021-07-18T00")
    assert store.keys("2021-07-18T00") == []


def test_states_of_another_subscriber_key_are_refused(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    key = store.write("h/f.0", random_partial(1, 1000, key_id="other"), partitions=4).key
    with pytest.raises(IncompatiblePartial):
        states_merge(
            store.url, [key], parts=[0], partitions=4, top_n=3, key_id="k", with_totals=True
        )


def test_a_file_read_into_the_store_equals_the_file_read_in_memory(tmp_path: Path) -> None:
    raw = tmp_path / "network.records-1626566400000.0.csv"
    rows = "".join(f"4917{i % 97},{i % 13},{i % 5},10,{i}\n" for i in range(5000))
    raw.write_text(",".join(HEADER) + "\n" + rows)
    store_url = str(tmp_path / "state")
    read = file_to_state(
        raw,
        hash_key="0123456789abcdef",
        block_size=64 * 1024,
        store_url=store_url,
        key_prefix="2021-07-18T00/f.0",
        partitions=16,
    )
    assert read.error is None and read.state is not None
    assert read.stats.rows_accepted == 5000
    stored = StateStore(store_url).read(read.state.key)
    assert stored.key_id == key_id_for("0123456789abcdef")
    assert len(stored.pairs) == read.state.pairs == 13 * 97


def test_parts_are_powers_of_two_and_stable() -> None:
    assert check_partitions(16) == 16
    for bad in (0, 3, 2048):
        with pytest.raises(ValueError, match="power of two"):
            check_partitions(bad)
    parts = cell_partition(np.arange(100_000, dtype=np.int64), 16)
    assert set(np.unique(parts)) == set(range(16))
    assert cell_partition(np.array([12345], dtype=np.int64), 16)[0] == parts[12345]


def test_states_are_read_on_the_calling_thread_never_on_arrow_s_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pool thread holding a state's Python buffer at interpreter exit aborts the process
    # (see kpis.pipeline.aggregates.READ_THREADS): every read of a state says use_threads=False.
    reads: list[tuple[str, object]] = []

    def spy(name: str, read: Callable[..., Any]) -> Callable[..., Any]:
        def spying(*args: Any, **kwargs: Any) -> Any:
            reads.append((name, kwargs.get("use_threads", "the default: True")))
            return read(*args, **kwargs)

        return spying

    monkeypatch.setattr(pq, "read_table", spy("read_table", pq.read_table))
    for name in ("read", "read_row_group"):
        monkeypatch.setattr(pq.ParquetFile, name, spy(name, getattr(pq.ParquetFile, name)))
    partial = random_partial(3, 5000)
    store = StateStore(str(tmp_path))
    keys = [store.write("h/a.0", partial, partitions=4).key]
    keys.append(store.write("h/b.0", partial, partitions=8).key)

    Partial.from_bytes(partial.to_bytes())
    store.read(keys[0])
    states_merge(store.url, keys, parts=[0, 1], partitions=4, top_n=3, key_id="k", with_totals=True)

    assert {name for name, _ in reads} == {"read_table", "read", "read_row_group"}
    assert {use_threads for _, use_threads in reads} == {False}
