"""Stored file states: each counted file's mergeable state, kept in the database in slices."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from kpis.models import (
    FileState,
    InputFileRecord,
)

if TYPE_CHECKING:
    from kpis.pipeline import Partial

# MySQL refuses packets above max_allowed_packet (16 MiB by default): a state is cut
# into slices, and at most this many slices go out in one INSERT (8 MiB a packet).
STATE_SLICE_BYTES = 4 * 1024 * 1024
SLICES_PER_INSERT = 2


def file_state_save(*, record: InputFileRecord, partial: Partial) -> None:
    """Replace the stored state of a counted file, cut into packet-sized slices."""
    FileState.objects.filter(file=record).delete()
    data = partial.to_bytes()
    FileState.objects.bulk_create(
        (
            FileState(file=record, seq=seq, data=data[offset : offset + STATE_SLICE_BYTES])
            for seq, offset in enumerate(range(0, len(data), STATE_SLICE_BYTES))
        ),
        batch_size=SLICES_PER_INSERT,
    )


def file_state_load(*, record: InputFileRecord) -> Partial:
    """The stored state of a counted file."""
    from kpis.pipeline import Partial  # pandas and pyarrow load with the first state read

    slices = FileState.objects.filter(file=record).order_by("seq").values_list("data", flat=True)
    return Partial.from_bytes(b"".join(bytes(piece) for piece in slices))


def file_states_drop(*, start: datetime, end: datetime) -> int:
    """Delete the stored states of every file of the intervals starting in [start, end)."""
    deleted, _ = FileState.objects.filter(
        file__interval_start_timestamp__gte=start, file__interval_start_timestamp__lt=end
    ).delete()
    return deleted
