"""Reading the files of a run on the executor, interval by interval.

Each file is read by a task (in this process, a local pool or a Dask worker),
or by one task per byte range when it is large, that writes the file's state
to the state store itself and sends back only its figures and a reference.
This module waits for those tasks while keeping the run's lock alive, and
turns a worker that died into a clear failure; it writes nothing to the
database.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kpis.pipeline import InputFile
from kpis.pipeline.executors import ExecutorFailed, FileExecutor, WorkerLost
from kpis.pipeline.location import input_exists
from kpis.pipeline.store import StateRef, state_key_prefix
from kpis.services.config import UpdateConfig

if TYPE_CHECKING:
    from kpis.pipeline import ReadStats
    from kpis.pipeline.tasks import MergedTops, StateRead

logger = logging.getLogger("kpis.update")

# How often a wait for work done elsewhere wakes up to renew the run's lock.
_WAIT_SECONDS = 1.0


@dataclass
class FileRead:
    """What reading one file gave: its figures, and its states in the store if it is usable."""

    stats: ReadStats
    error: str | None = None
    states: list[StateRef] = field(default_factory=list)
    # The ranking of a file read as one state, made while it was read.
    tops: MergedTops | None = None


Heartbeat = Callable[[], None]


@dataclass
class _FileJob:
    """The tasks reading one file: one per byte range, and its digest when read in ranges."""

    input_file: InputFile
    parts: list[Future[StateRead]] = field(default_factory=list)
    digest: Future[str] | None = None
    # What was found before any task ran: the file is gone, or cannot be read at all.
    vanished: bool = False
    failed: FileRead | None = None

    def futures(self) -> list[Future[Any]]:
        return [*self.parts, *([self.digest] if self.digest is not None else [])]

    def succeeded(self) -> bool:
        return all(f.done() and not f.cancelled() and f.exception() is None for f in self.futures())


def wait_alive(futures: Sequence[Future[Any]], heartbeat: Heartbeat) -> None:
    """Wait for ``futures``, renewing the run's lock every second meanwhile."""
    while wait(futures, timeout=_WAIT_SECONDS).not_done:
        heartbeat()
    heartbeat()


def _spans(input_file: InputFile, config: UpdateConfig) -> list[tuple[int, int]]:
    """The byte ranges a file is read in: one, unless it is large and not compressed."""
    from kpis.pipeline import byte_ranges, splittable

    if not splittable(input_file.path):
        return [(0, input_file.size)]  # gzip cannot be entered in the middle
    return byte_ranges(input_file.size, config.range_bytes)


def _weight(files: list[InputFile], config: UpdateConfig) -> int:
    """The tasks reading ``files`` take (their ranges, and a digest beside a split file)."""
    spans = [len(_spans(f, config)) for f in files]
    return sum(count + 1 if count > 1 else 1 for count in spans)


def _read_submit(
    executor: FileExecutor, input_file: InputFile, config: UpdateConfig, heartbeat: Heartbeat
) -> _FileJob:
    """Submit the tasks that read one file and write its states to the store."""
    # Imported here, not above: a run with nothing to read never loads pandas.
    from kpis.pipeline import ReadStats, UnreadableFile, ranges, tasks

    common: dict[str, Any] = {
        "hash_key": config.hash_key,
        "block_size": config.block_size,
        "store_url": config.state_url,
        "partitions": config.partitions,
    }
    if executor.in_process:
        # Called per block in this process; elsewhere the wait for results calls it.
        common["on_block"] = heartbeat

    def key_prefix(seq: int) -> str:
        name = state_key_prefix(input_file.interval_start, input_file.name, seq=seq)
        return config.state_prefix + name

    path = input_file.path
    spans = _spans(input_file, config)
    job = _FileJob(input_file)
    try:
        if len(spans) == 1:
            job.parts.append(
                executor.submit(
                    tasks.file_to_state,
                    path,
                    key_prefix=key_prefix(0),
                    top_n=config.top_n,
                    **common,
                )
            )
            return job
        try:
            header = ranges.read_header(path)  # once, for every range
        except FileNotFoundError:
            job.vanished = True
            return job
        except UnreadableFile as error:
            job.failed = FileRead(stats=ReadStats(), error=str(error))
            return job
        job.digest = executor.submit(ranges.file_digest, path)
        job.parts.extend(
            executor.submit(
                tasks.range_to_state,
                path,
                byte_range=span,
                header=header,
                key_prefix=key_prefix(seq),
                **common,
            )
            for seq, span in enumerate(spans)
        )
    except executor.lost as error:
        # A pool that broke refuses new work; report it where results are collected.
        failed: Future[StateRead] = Future()
        failed.set_exception(error)
        job.parts.append(failed)
    return job


def _read_collect(
    jobs: list[_FileJob], executor: FileExecutor, heartbeat: Heartbeat
) -> dict[str, FileRead]:
    """Wait for the files of one interval, keeping the lock alive; what each gave, by name."""
    from kpis.pipeline import ReadStats, UnreadableFile

    wait_alive([future for job in jobs for future in job.futures()], heartbeat)
    reads: dict[str, FileRead] = {}
    for job in jobs:
        input_file = job.input_file
        try:
            if job.vanished:
                raise FileNotFoundError(input_file.path)
            read = job.failed or _combined(
                [part.result() for part in job.parts],
                digest=job.digest.result() if job.digest is not None else None,
            )
        except executor.lost:
            raise
        except FileNotFoundError:
            if not (executor.remote and input_exists(input_file.path)):
                logger.warning("file %s disappeared before it could be read", input_file.name)
                continue
            # Here but not there: the worker does not see the input folder.
            read = FileRead(
                stats=ReadStats(),
                error=(
                    f"a Dask worker could not find {input_file.path}: every worker must see "
                    "the input folder at the same path as this machine (shared storage)"
                ),
                states=_written(job),
            )
        except UnreadableFile as error:  # the digest's read of the file failed
            read = FileRead(stats=ReadStats(), error=str(error), states=_written(job))
        except Exception as error:
            if not executor.remote:
                raise
            raise ExecutorFailed(
                f"{executor.description} could not read {input_file.name}: "
                f"{type(error).__name__}: {' '.join(str(error).split())}; "
                "the scheduler and every worker must run this project's code with the same "
                "requirements (see docs/operations.md, Parallel and distributed runs)"
            ) from error
        if read.error is not None:
            logger.error("file %s failed: %s", input_file.name, read.error)
        else:
            logger.debug(
                "read %s: rows accepted=%d rejected=%d",
                input_file.name,
                read.stats.rows_accepted,
                read.stats.rows_rejected,
            )
        reads[input_file.name] = read
    return reads


def _combined(results: list[StateRead], *, digest: str | None) -> FileRead:
    """One file's read from its ranges' results (or its single read's)."""
    from kpis.pipeline import ReadStats

    states = [result.state for result in results if result.state is not None]
    errors = [result.error for result in results if result.error is not None]
    if digest is None:
        (result,) = results
        return FileRead(stats=result.stats, error=result.error, states=states, tops=result.tops)
    else:
        stats = ReadStats.merged([result.stats for result in results], sha256=digest)
    # A failed file keeps the states its other ranges wrote only so that they are deleted.
    return FileRead(stats=stats, error=errors[0] if errors else None, states=states)


def _written(job: _FileJob) -> list[StateRef]:
    """The states the tasks of a failed file wrote all the same (to delete them)."""
    written = []
    for part in job.parts:
        if part.done() and not part.cancelled() and part.exception() is None:
            state = part.result().state
            if state is not None:
                written.append(state)
    return written


def reads_in_order(
    batches: list[tuple[datetime, list[InputFile]]],
    *,
    config: UpdateConfig,
    executor: FileExecutor,
    heartbeat: Heartbeat,
) -> Iterator[tuple[datetime, dict[str, FileRead]]]:
    """Read the files of each interval on ``executor``; yield what they gave in interval order.

    Later intervals are read while earlier ones are stored, but at most
    ``executor.slots`` files (or one interval's) are in flight or waiting, so
    the backlog never piles up in memory or in the store.
    """
    queue = deque(batches)
    # Each interval's jobs, and the generation of the executor they were submitted to.
    pending: deque[tuple[datetime, list[_FileJob], int]] = deque()
    in_flight = 0
    while queue or pending:
        while queue and (not pending or in_flight + _weight(queue[0][1], config) <= executor.slots):
            start, files = queue.popleft()
            jobs = [_read_submit(executor, f, config, heartbeat) for f in files]
            pending.append((start, jobs, executor.generation))
            in_flight += _weight(files, config)
        start, jobs, _ = pending[0]
        try:
            reads = _read_collect(jobs, executor, heartbeat)
        except executor.lost as error:
            unfinished = [
                j.input_file.name for _, js, _ in pending for j in js if not j.succeeded()
            ]
            # The executor may have been replaced already, by a merge that met the same death.
            if any(generation == executor.generation for _, _, generation in pending):
                if not executor.renewable:
                    raise WorkerLost(
                        f"a worker process died while reading ({error or type(error).__name__}); "
                        f"{len(unfinished)} file(s) were not read, from interval "
                        f"{start:%Y-%m-%dT%H:%MZ} on, and nothing of those intervals was stored; "
                        "the next run reads them again"
                    ) from error
                executor.renew()
            logger.warning(
                "a worker process died while reading; reading %d unfinished file(s) again "
                "in a new pool of %s",
                len(unfinished),
                executor.description,
            )
            for index, (interval, old_jobs, _) in enumerate(pending):
                fresh = [
                    job
                    if job.succeeded()
                    else _read_submit(executor, job.input_file, config, heartbeat)
                    for job in old_jobs
                ]
                pending[index] = (interval, fresh, executor.generation)
            continue
        pending.popleft()
        in_flight -= _weight([job.input_file for job in jobs], config)
        yield start, reads
