"""File states: kept in the state store, referenced by the database, on every database.

States larger than a database packet never go through the database; the old
states kept in slices move to the store with the migration; replaced states go
only once the transaction commits; a crash's leftovers are swept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from kpis.models import FileState, InputFileRecord, InputFileStatus
from kpis.pipeline.aggregates import Partial, _distinct_pairs, service_totals
from kpis.pipeline.store import StateStore, state_key_prefix
from kpis.services import orphan_states_sweep, state_store
from kpis.services.state import file_states_replace, state_keys
from kpis.tests.conftest import utc

MIB = 1024 * 1024
START = utc("2021-07-18T00:00")


def large_partial(pairs: int) -> Partial:
    """Random subscriber hashes compress badly: a few million pairs pass 16 MiB."""
    rng = np.random.default_rng(16)
    return Partial(
        key_id="k",
        service_bytes=service_totals(rng.integers(0, 60, 1000), rng.integers(0, 10**9, 1000)),
        pairs=_distinct_pairs(
            [rng.integers(0, 30_000, pairs, dtype=np.int64)],
            [rng.integers(0, 2**64 - 1, pairs, dtype=np.uint64)],
        ),
    )


def a_record(name: str = "network.records-1626566400000.0.csv") -> InputFileRecord:
    return InputFileRecord.objects.create(
        name=name,
        interval_start_timestamp=START,
        size=1,
        mtime_ns=1,
        status=InputFileStatus.COUNTED,
        processed_at=timezone.now(),
    )


def assert_default_packet_limit() -> None:
    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@max_allowed_packet")
            (packet,) = cursor.fetchone()
        assert packet <= 16 * MIB, "run this on a server with the default max_allowed_packet"


@pytest.mark.django_db
def test_a_state_above_the_packet_limit_is_kept_in_the_store_and_only_referenced() -> None:
    assert_default_packet_limit()
    partial = large_partial(3_000_000)
    record = a_record()
    store = state_store()
    prefix = state_key_prefix(START, record.name, seq=0)

    first = store.write(prefix, partial, partitions=16)
    file_states_replace(record=record, states=[first])
    second = store.write(prefix, partial, partitions=16)
    file_states_replace(record=record, states=[second])  # replacing it works as well

    assert second.size > 16 * MIB
    (row,) = FileState.objects.filter(file=record)
    assert (row.key, row.size, row.pairs) == (second.key, second.size, len(partial.pairs))
    back = store.read(row.key)
    assert back.top_cells(10) == partial.top_cells(10)
    assert back.top_services(10) == partial.top_services(10)
    assert len(back.pairs) == len(partial.pairs)


@pytest.mark.django_db(transaction=True)
def test_replaced_states_go_once_committed_and_stay_after_a_rollback(state_dir: Path) -> None:
    record = a_record()
    store = state_store()
    prefix = state_key_prefix(START, record.name, seq=0)
    partial = large_partial(1000)
    old = store.write(prefix, partial, partitions=4)
    with transaction.atomic():
        file_states_replace(record=record, states=[old])

    new = store.write(prefix, partial, partitions=4)
    with transaction.atomic():
        file_states_replace(record=record, states=[new])
        transaction.set_rollback(True)  # the interval's transaction fails
    assert state_keys([record]) == [old.key]
    assert set(store.keys("2021-07-18T00")) == {old.key, new.key}

    assert orphan_states_sweep(hours=[START]) == 1  # the rolled-back write
    assert store.keys("2021-07-18T00") == [old.key]

    with transaction.atomic():
        newer = store.write(prefix, partial, partitions=4)
        file_states_replace(record=record, states=[newer])
        assert old.key in store.keys("2021-07-18T00")  # not before the commit
    assert store.keys("2021-07-18T00") == [newer.key]
    assert orphan_states_sweep(hours=[START]) == 0


@pytest.mark.django_db(transaction=True)
def test_states_kept_in_slices_move_to_the_store_with_the_migration(state_dir: Path) -> None:
    """A database from before the state store: its slices become one stored state per file."""
    assert_default_packet_limit()
    executor = MigrationExecutor(connection)
    executor.migrate([("kpis", "0003_update_run")])
    apps = executor.loader.project_state([("kpis", "0003_update_run")]).apps
    OldRecord = apps.get_model("kpis", "InputFileRecord")
    OldState = apps.get_model("kpis", "FileState")
    partials = {"network.records-1626566400000.0.csv": large_partial(3_000_000)}
    partials["network.records-1626566400000.1.csv"] = large_partial(500)
    for name, partial in partials.items():
        record = OldRecord.objects.create(
            name=name,
            interval_start_timestamp=START,
            size=1,
            mtime_ns=1,
            status=InputFileStatus.COUNTED,
            processed_at=timezone.now(),
        )
        data = partial.to_bytes()
        slice_bytes = 4 * MIB
        OldState.objects.bulk_create(
            (
                OldState(file=record, seq=seq, data=data[offset : offset + slice_bytes])
                for seq, offset in enumerate(range(0, len(data), slice_bytes))
            ),
            batch_size=2,  # under the packet limit, as the slices were written
        )
    assert OldState.objects.count() > len(partials)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    store = StateStore(str(state_dir))
    for name, partial in partials.items():
        (row,) = FileState.objects.filter(file__name=name)
        assert row.key.startswith(f"2021-07-18T00/{name}.0.")
        moved = store.read(row.key)
        assert moved.top_cells(20) == partial.top_cells(20)
        assert moved.top_services(20) == partial.top_services(20)
        assert len(moved.pairs) == row.pairs == len(partial.pairs)
    assert len(store.keys("2021-07-18T00")) == len(partials)
