"""Where the per-file work runs: in the calling process, a local process pool, or a Dask cluster.

All three look the same to the caller: a :class:`concurrent.futures.Executor`
that runs top-level, picklable functions such as :func:`kpis.pipeline.aggregate_file`.
Nothing here imports Django, so worker processes never set it up and never
inherit a database connection.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Literal, ParamSpec, TypeVar

from kpis.pipeline.location import storage_environment

logger = logging.getLogger("kpis.update")

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Files in flight per worker: one being read, one queued so that no worker
# waits while the command's process stores the previous interval.
_FILES_PER_WORKER = 2
# Modules imported once by the fork server, so that every worker starts with them:
# the ones that load pandas and pyarrow (importing kpis.pipeline alone does not).
_WORKER_PRELOAD = ["kpis.pipeline.aggregates", "kpis.pipeline.reader"]


class SchedulerUnreachable(Exception):
    """The Dask scheduler named by the settings did not answer."""


class ExecutorFailed(Exception):
    """The executor could not run the work (not a bad file: the file was not read)."""


class WorkerLost(ExecutorFailed):
    """A worker process died while it was reading files."""


@dataclass(frozen=True)
class ExecutorConfig:
    """How a run reads its files: ``workers`` local processes, or the Dask ``scheduler``."""

    workers: int = 1
    scheduler: str = ""
    connect_timeout: float = 10.0


class InlineExecutor(Executor):
    """Runs each call at once in the calling process; its future is already done."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:  # handed to the caller through the future, as a pool does
            future.set_exception(error)
        return future


@dataclass
class FileExecutor:
    """An executor for one run, with what the caller needs to know about where work runs.

    ``in_process``: calls run in the caller's process (callbacks may be passed);
    ``remote``: other machines open the files (a missing file may be missing there
    only); ``slots``: how many files may be in flight at once;
    ``lost``: the exceptions that mean a worker died, not that a file is bad.
    """

    kind: Literal["in-process", "process pool", "dask"]
    executor: Executor
    slots: int
    description: str
    lost: tuple[type[BaseException], ...] = ()
    # Tasks that run at once: what a merge is split into.
    workers: int = 1
    _renew: Callable[[], Executor] | None = field(default=None, repr=False)

    @property
    def in_process(self) -> bool:
        return self.kind == "in-process"

    @property
    def remote(self) -> bool:
        return self.kind == "dask"

    # How many times the executor was replaced after a worker died (once per run at most).
    generation: int = 0

    @property
    def renewable(self) -> bool:
        """Whether a fresh executor can replace one whose worker died."""
        return self._renew is not None and self.generation == 0

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        return self.executor.submit(fn, *args, **kwargs)

    def renew(self) -> None:
        """Replace a broken executor by a fresh one; futures of the old one stay failed."""
        if self._renew is None:
            raise WorkerLost(f"the {self.kind} cannot be replaced")
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor = self._renew()
        self.generation += 1


def _process_pool(workers: int) -> ProcessPoolExecutor:
    # Workers come from a fork server started afresh (not forked from this
    # process, whose database connections and threads must not be copied), with
    # the pipeline already imported so each worker is ready at once.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_WORKER_PRELOAD)
    alive, keep = context.Pipe(duplex=False)
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_worker_start,
        initargs=(alive, storage_environment()),
    )
    # Workers hold the reading end; this process alone holds the writing end,
    # which the OS closes when this process ends, however it ends.
    _pool_lifelines[id(pool)] = keep
    weakref.finalize(pool, _pool_lifelines.pop, id(pool), None)
    return pool


_pool_lifelines: dict[int, Connection] = {}


def _worker_start(alive: Connection, environment: dict[str, str | None]) -> None:
    # The fork server keeps the environment it was started with; a worker reads
    # objects with the caller's object-storage variables as they are now.
    for variable, value in environment.items():
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value
    _exit_with_caller(alive)


def _exit_with_caller(alive: Connection) -> None:
    """Make this worker exit as soon as the process that started the pool has gone.

    Idle workers otherwise wait for work forever, holding the output of a
    command that was killed open.
    """

    def watch() -> None:
        with suppress(EOFError):
            alive.recv()
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-caller", daemon=True).start()


@contextmanager
def executor_for(config: ExecutorConfig, *, files: int) -> Iterator[FileExecutor]:
    """Open the executor ``config`` asks for, sized for ``files`` files; close it on exit.

    With no scheduler and one worker (or one file) the work stays in this process.
    Raises :class:`SchedulerUnreachable` when the Dask scheduler does not answer.
    """
    if config.scheduler:
        with _dask_executor(config) as executor:
            yield executor
        return
    workers = max(1, min(config.workers, files))
    if workers == 1:
        yield FileExecutor(
            kind="in-process", executor=InlineExecutor(), slots=1, description="this process"
        )
        return
    pool = FileExecutor(
        kind="process pool",
        executor=_process_pool(workers),
        slots=workers * _FILES_PER_WORKER,
        description=f"{workers} local worker processes",
        workers=workers,
        lost=(BrokenProcessPool,),
        _renew=lambda: _process_pool(workers),
    )
    try:
        yield pool
    finally:
        pool.executor.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _dask_executor(config: ExecutorConfig) -> Iterator[FileExecutor]:
    # Imported here: a run without a cluster never pays for loading distributed.
    from distributed import Client, KilledWorker

    try:
        client = Client(config.scheduler, timeout=config.connect_timeout, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise SchedulerUnreachable(
            f"KPI_DASK_SCHEDULER={config.scheduler}: cannot reach the Dask scheduler ({error}); "
            "nothing was read or stored"
        ) from None
    try:
        try:
            client.wait_for_workers(1, timeout=config.connect_timeout)
        except TimeoutError:
            raise SchedulerUnreachable(
                f"KPI_DASK_SCHEDULER={config.scheduler}: the Dask scheduler has no workers "
                f"(none joined within {config.connect_timeout:g} s); nothing was read or stored"
            ) from None
        threads = sum(client.nthreads().values())
        yield FileExecutor(
            kind="dask",
            # pure=False: a file read twice in one run (after a worker died) is read again.
            executor=client.get_executor(pure=False),
            slots=max(1, threads) * _FILES_PER_WORKER,
            description=f"the Dask cluster at {config.scheduler} ({threads} worker threads)",
            lost=(KilledWorker,),
            workers=max(1, threads),
        )
    finally:
        client.close()
