"""The work an executor runs: read a file into a stored state, merge stored states.

Each task is a top-level function with small, picklable arguments and a small
result, so that it runs the same in this process, in a local pool or on a Dask
worker on another machine, which opens the input and the state store itself.
What comes back is a summary and a reference (:class:`StateRead`) or a
ranking's worth of rows (:class:`MergedTops`), never the pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kpis.pipeline import FileOutcome, aggregate_file
from kpis.pipeline.aggregates import IncompatiblePartial, _add_totals, _distinct_pairs, _top
from kpis.pipeline.location import InputPath, is_url
from kpis.pipeline.ranges import aggregate_range
from kpis.pipeline.reader import ReadStats
from kpis.pipeline.state_format import part_pairs, service_totals_of, state_metadata
from kpis.pipeline.store import StateRef, StateStore


@dataclass(frozen=True, slots=True)
class StateRead:
    """A file read into the state store: its figures, and where its state is (if counted)."""

    stats: ReadStats
    error: str | None
    state: StateRef | None
    # The state's own ranking, when asked for (``top_n``): an interval of one state needs
    # no merge, so its state is not read back.
    tops: MergedTops | None = None


def file_to_state(
    path: InputPath,
    *,
    hash_key: str,
    block_size: int,
    store_url: str,
    key_prefix: str,
    partitions: int,
    top_n: int | None = None,
    on_block: Callable[[], None] | None = None,
) -> StateRead:
    """Read one raw file and write its state; raises ``FileNotFoundError`` if it is gone."""
    outcome: FileOutcome = aggregate_file(
        _input_path(path), hash_key=hash_key, block_size=block_size, on_block=on_block
    )
    return _stored(
        outcome, store_url=store_url, key_prefix=key_prefix, partitions=partitions, top_n=top_n
    )


def range_to_state(
    path: InputPath,
    *,
    byte_range: tuple[int, int],
    header: bytes,
    hash_key: str,
    block_size: int,
    store_url: str,
    key_prefix: str,
    partitions: int,
    top_n: int | None = None,
    on_block: Callable[[], None] | None = None,
) -> StateRead:
    """Read the lines of one byte range of a file and write their state, as :func:`file_to_state`.

    ``header`` is the file's header line (:func:`~kpis.pipeline.ranges.read_header`);
    the stats carry no sha256 (see :func:`~kpis.pipeline.ranges.file_digest`).
    """
    outcome = aggregate_range(
        _input_path(path),
        byte_range=byte_range,
        header=header,
        hash_key=hash_key,
        block_size=block_size,
        on_block=on_block,
    )
    return _stored(
        outcome, store_url=store_url, key_prefix=key_prefix, partitions=partitions, top_n=top_n
    )


def _input_path(path: InputPath) -> InputPath:
    """A local path given as text becomes a :class:`Path`; an ``s3://`` URL stays text."""
    return path if isinstance(path, Path) or is_url(path) else Path(path)


def _stored(
    outcome: FileOutcome, *, store_url: str, key_prefix: str, partitions: int, top_n: int | None
) -> StateRead:
    partial = outcome.partial
    if partial is None or (not len(partial.pairs) and not len(partial.service_bytes)):
        return StateRead(stats=outcome.stats, error=outcome.error, state=None)
    state = StateStore(store_url).write(key_prefix, partial, partitions=partitions)
    tops = None
    if top_n is not None:
        # The pairs of one state are distinct: a cell's pairs are its subscribers.
        cells = pd.Series(partial.pairs["cell_id"].to_numpy()).value_counts(sort=False)
        tops = MergedTops(top_cells=_top(cells, top_n), service_bytes=partial.service_bytes)
    return StateRead(stats=outcome.stats, error=None, state=state, tops=tops)


@dataclass(frozen=True, slots=True)
class MergedTops:
    """What a merge of states sends back: small, whatever the volume merged."""

    # The top cells of each part merged, by distinct subscribers.
    top_cells: list[tuple[int, int]]
    # Exact byte totals of every service, or None when this task was not asked for them.
    service_bytes: pd.Series | None


def states_merge(
    store_url: str,
    keys: Sequence[str],
    *,
    parts: Sequence[int],
    partitions: int,
    top_n: int,
    key_id: str,
    with_totals: bool,
) -> MergedTops:
    """Merge the given parts of the states under ``keys``; their top cells and the totals.

    Parts are merged one at a time, so that memory follows the largest part. A
    cell lies in one part only, so the top cells overall are the top of the
    parts' top cells.
    """
    store = StateStore(store_url)
    top_cells: list[tuple[int, int]] = []
    totals: list[pd.Series] = []
    with ExitStack() as stack:
        # Each state is opened once (its footer read once); its parts are then read one by one.
        states = [stack.enter_context(store.open(key)) for key in keys]
        for parquet in states:
            metadata = state_metadata(parquet)
            if metadata[b"key_id"].decode() != key_id:
                raise IncompatiblePartial(
                    "stored subscriber state was made with another KPI_SUBSCRIBER_KEY"
                )
            if with_totals:
                totals.append(service_totals_of(metadata))
        for part in parts:
            cell_ids: list[np.ndarray] = []
            subscribers: list[np.ndarray] = []
            for parquet in states:
                cell_id, subscriber = part_pairs(parquet, part, partitions)
                if len(cell_id):
                    cell_ids.append(cell_id)
                    subscribers.append(subscriber)
            top_cells.extend(_part_top_cells(cell_ids, subscribers, top_n))
    return MergedTops(
        top_cells=top_cells, service_bytes=_add_totals(totals) if with_totals else None
    )


def _part_top_cells(
    cell_ids: list[np.ndarray], subscribers: list[np.ndarray], top_n: int
) -> list[tuple[int, int]]:
    if not cell_ids:
        return []
    if len(cell_ids) == 1:  # the pairs of one state are distinct already
        cell_id = cell_ids[0]
    else:
        cell_id = _distinct_pairs(cell_ids, subscribers)["cell_id"].to_numpy()
    return _top(pd.Series(cell_id).value_counts(sort=False), top_n)


def merge_plan(parts: int, tasks: int) -> Iterator[list[int]]:
    """Deal ``parts`` part numbers into at most ``tasks`` lists, each a task's work."""
    tasks = max(1, min(tasks, parts))
    for task in range(tasks):
        yield list(range(task, parts, tasks))


@dataclass(frozen=True, slots=True)
class Ranking:
    """The merged result of some states, ranked as the KPIs need it."""

    service_bytes: pd.Series
    # The top cells of every part: enough for any top-n up to the n the merge used.
    cells: list[tuple[int, int]]

    @classmethod
    def of(cls, results: Iterable[MergedTops]) -> Ranking:
        results = list(results)
        return cls(
            service_bytes=_add_totals(
                r.service_bytes for r in results if r.service_bytes is not None
            ),
            cells=[cell for r in results for cell in r.top_cells],
        )

    def top_services(self, n: int) -> list[tuple[int, int]]:
        """The ``n`` services with most bytes, ties to the smaller service_id."""
        return _top(self.service_bytes, n)

    def top_cells(self, n: int) -> list[tuple[int, int]]:
        """The ``n`` cells with most distinct subscribers, ties to the smaller cell_id."""
        if not self.cells:
            return []
        keys, values = zip(*self.cells, strict=True)
        return _top(pd.Series(values, index=pd.Index(keys, dtype=np.int64)), n)
