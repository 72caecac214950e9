"""File states: the database's references to the states kept in the state store.

A state is written to the store first, under a key that cannot collide, and
only then referenced here, in the transaction that counts its file. So the
database never references a missing state. What a crash or a rollback leaves
behind is an unreferenced state, removed by :func:`orphan_states_sweep` at the
start of a later run; states replaced or dropped are deleted only once the
transaction that stopped referencing them has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from django.conf import settings
from django.db import transaction

from kpis.models import FileState, InputFileRecord
from kpis.pipeline import HOUR
from kpis.pipeline.store import StateRef, StateStore, hour_prefix

logger = logging.getLogger("kpis.update")


def state_store(url: str | None = None) -> StateStore:
    """The state store at ``url`` (default: ``KPI_STATE_URL``)."""
    return StateStore(url or settings.KPI_STATE_URL)


def file_states_replace(*, record: InputFileRecord, states: Sequence[StateRef]) -> None:
    """Make ``states`` the states of a counted file (in order: range 0, 1, ...)."""
    replaced = list(FileState.objects.filter(file=record).values_list("key", flat=True))
    FileState.objects.filter(file=record).delete()
    FileState.objects.bulk_create(
        FileState(file=record, seq=seq, key=state.key, size=state.size, pairs=state.pairs)
        for seq, state in enumerate(states)
    )
    states_delete_on_commit([key for key in replaced if key not in {s.key for s in states}])


def file_states_clear(*, record: InputFileRecord) -> None:
    """A file no longer counted (failed, duplicate) has no states."""
    file_states_replace(record=record, states=())


def state_keys(records: Iterable[InputFileRecord]) -> list[str]:
    """The keys of the states of ``records``, file by file, range by range."""
    ids = [record.pk for record in records]
    keys: list[str] = []
    for offset in range(0, len(ids), 900):  # under SQLite's bound-parameter limit
        keys.extend(
            FileState.objects.filter(file_id__in=ids[offset : offset + 900])
            .order_by("file__name", "seq")
            .values_list("key", flat=True)
        )
    return keys


def states_delete_on_commit(keys: Sequence[str], *, prefixes: Sequence[str] = ()) -> None:
    """Delete states from the store once the current transaction commits (never on rollback)."""
    if keys or prefixes:
        transaction.on_commit(lambda: _delete(list(keys), list(prefixes)))


def _delete(keys: list[str], prefixes: list[str]) -> None:
    store = state_store()
    try:
        store.delete(keys)
        for prefix in prefixes:
            store.delete_prefix(prefix)
    except OSError as error:
        # Committed already: what is left unreferenced goes with a later sweep.
        logger.warning("could not delete %d replaced state(s) now: %s", len(keys), error)


def file_states_drop(*, start: datetime, end: datetime) -> int:
    """Drop the states of every file of the intervals starting in [start, end); return how many.

    The rows go now; the hours' folders in the store go once the transaction commits.
    """
    deleted, _ = FileState.objects.filter(
        file__interval_start_timestamp__gte=start, file__interval_start_timestamp__lt=end
    ).delete()
    hours = []
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        hours.append(hour_prefix(hour))
        hour += HOUR
    states_delete_on_commit((), prefixes=hours)
    return deleted


def orphan_states_sweep(*, hours: Iterable[datetime], store: StateStore | None = None) -> int:
    """Remove the states of these hours that no file references; return how many.

    Such states are what a run that crashed or rolled back after writing them
    left behind. Only a run holding the run lock may sweep: another run's
    states are unreferenced until its transaction commits.
    """
    store = store or state_store()
    removed = 0
    for hour_start in sorted(set(hours)):
        found = store.keys(hour_prefix(hour_start))
        if not found:
            continue
        referenced = set(
            FileState.objects.filter(
                file__interval_start_timestamp__gte=hour_start,
                file__interval_start_timestamp__lt=hour_start + HOUR,
            ).values_list("key", flat=True)
        )
        orphans = [key for key in found if key not in referenced]
        if orphans:
            store.delete(orphans)
            removed += len(orphans)
            logger.info(
                "hour=%s: removed %d state(s) that no file references (left by an interrupted run)",
                f"{hour_start:%Y-%m-%dT%H:%MZ}",
                len(orphans),
            )
    return removed
