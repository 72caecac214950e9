"""File states larger than a database packet: stored and read back whole, on every database."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from kpis.models import FileState, InputFileRecord, InputFileStatus
from kpis.pipeline.aggregates import Partial, _distinct_pairs, service_totals
from kpis.services import STATE_SLICE_BYTES, file_state_load, file_state_save
from kpis.tests.conftest import utc

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024


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


def test_a_state_above_the_packet_limit_is_stored_and_read_back_whole() -> None:
    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@max_allowed_packet")
            (packet,) = cursor.fetchone()
        assert packet <= 16 * MIB, "run this on a server with the default max_allowed_packet"
    partial = large_partial(3_000_000)
    size = len(partial.to_bytes())
    assert size > 16 * MIB
    record = InputFileRecord.objects.create(
        name="network.records-1626566400000.0.csv",
        interval_start_timestamp=utc("2021-07-18T00:00"),
        size=1,
        mtime_ns=1,
        status=InputFileStatus.COUNTED,
        processed_at=timezone.now(),
    )

    file_state_save(record=record, partial=partial)
    file_state_save(record=record, partial=partial)  # replacing it works as well

    assert FileState.objects.filter(file=record).count() == -(-size // STATE_SLICE_BYTES)
    back = file_state_load(record=record)
    assert back.top_cells(10) == partial.top_cells(10)
    assert back.top_services(10) == partial.top_services(10)
    assert len(back.pairs) == len(partial.pairs)
