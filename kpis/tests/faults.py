"""Tools to break the command from the outside, and to compare whole databases.

Faults are injected into a ``manage.py`` subprocess through a ``sitecustomize``
module put first on its PYTHONPATH: production code has no test hooks.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path
from typing import Any

from kpis.models import (
    CellUniqueUsers,
    FileState,
    InputFileRecord,
    IntervalLedger,
    IntervalType,
    ServiceTrafficVolume,
)
from kpis.pipeline import Partial
from kpis.services import state_store

Snapshot = dict[str, list[tuple[Any, ...]]]

_SITECUSTOMIZE = textwrap.dedent(
    '''
    """Fault injection for tests: wraps one function of the service once Django is set up.

    KILL_AT=module:function:nth:when kills this process with SIGKILL on the nth call,
    when = before (on entry), after (once the original returned, inside any transaction
    it is part of) or reading (at the first block the reader parses).
    BARRIER_DIR=path makes run_lock_acquire wait until path/go exists.
    PAUSE_AT=module:function:nth:when with PAUSE_DIR=path stops at that point, creates
    path/paused and waits until path/resume exists.
    """
    import importlib
    import os
    import signal
    import time

    import django

    _setup = django.setup


    def _die():
        os.kill(os.getpid(), signal.SIGKILL)


    def _wrap(module_name, name, make):
        module = importlib.import_module(module_name)
        setattr(module, name, make(getattr(module, name)))


    def _pause():
        directory = os.environ["PAUSE_DIR"]
        open(os.path.join(directory, "paused"), "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(directory, "resume")):
            if time.monotonic() > deadline:
                raise SystemExit("never resumed")
            time.sleep(0.01)


    def _install_fault(spec, fault):
        module_name, name, nth, when = spec.split(":")
        nth = int(nth)

        def make(original):
            calls = 0

            def wrapper(*args, **kwargs):
                nonlocal calls
                calls += 1
                if calls != nth:
                    return original(*args, **kwargs)
                if when == "before":
                    fault()
                    return original(*args, **kwargs)
                if when == "reading":
                    kwargs["on_block"] = fault
                    return original(*args, **kwargs)
                result = original(*args, **kwargs)
                fault()
                return result

            return wrapper

        _wrap(module_name, name, make)


    def _install_barrier(directory):
        def make(original):
            def wrapper(*args, **kwargs):
                open(os.path.join(directory, f"ready-{os.getpid()}"), "w").close()
                deadline = time.monotonic() + 60
                while not os.path.exists(os.path.join(directory, "go")):
                    if time.monotonic() > deadline:
                        raise SystemExit("barrier never opened")
                    time.sleep(0.005)
                return original(*args, **kwargs)

            return wrapper

        _wrap("kpis.services.locks", "run_lock_acquire", make)


    def setup(*args, **kwargs):
        _setup(*args, **kwargs)
        if os.environ.get("KILL_AT"):
            _install_fault(os.environ["KILL_AT"], _die)
        if os.environ.get("PAUSE_AT"):
            _install_fault(os.environ["PAUSE_AT"], _pause)
        if os.environ.get("BARRIER_DIR"):
            _install_barrier(os.environ["BARRIER_DIR"])


    django.setup = setup
    '''
)


def fault_env(directory: Path, **variables: str) -> dict[str, str]:
    """Environment for a subprocess that loads the fault injector from ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return {"PYTHONPATH": str(directory), **variables}


def state_digest(partial: Partial) -> str:
    """Content of a stored file state, independent of row order in its serialisation."""
    pairs = sorted(
        zip(partial.pairs["cell_id"].tolist(), partial.pairs["subscriber"].tolist(), strict=True)
    )
    content = [partial.key_id, sorted(partial.service_bytes.to_dict().items()), pairs]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


def stored_states() -> list[tuple[str, int, str]]:
    """Every file state the database references, read from the store: (file, seq, content)."""
    store = state_store()
    return [
        (name, seq, state_digest(store.read(key)))
        for name, seq, key in FileState.objects.order_by("file__name", "seq").values_list(
            "file__name", "seq", "key"
        )
    ]


def _rows(queryset: Any, *fields: str) -> list[tuple[Any, ...]]:
    rows = []
    for row in queryset.values_list(*fields):
        rows.append(
            tuple(
                json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
                for value in row
            )
        )
    return sorted(rows, key=repr)


def database_snapshot() -> Snapshot:
    """Every KPI row, ledger row, file record and file state, without ids and clock times."""
    times = ("interval_start_timestamp", "interval_end_timestamp", "interval")
    ledger_fields = [
        f.name for f in IntervalLedger._meta.fields if f.name not in ("id", "processed_at")
    ]
    file_fields = [
        f.name
        for f in InputFileRecord._meta.fields
        if f.name not in ("id", "processed_at", "missing_since")
    ]
    return {
        "service_rows": _rows(ServiceTrafficVolume.objects, *times, "service_id", "total_bytes"),
        "cell_rows": _rows(CellUniqueUsers.objects, *times, "cell_id", "number_of_unique_users"),
        "ledger": _rows(IntervalLedger.objects, *ledger_fields),
        "files": _rows(InputFileRecord.objects, *file_fields),
        "states": stored_states(),
    }


def database_clear() -> None:
    """Remove everything the command writes, as if it had never run."""
    for model in (ServiceTrafficVolume, CellUniqueUsers, IntervalLedger, FileState):
        model.objects.all().delete()
    InputFileRecord.objects.all().delete()


def assert_part_of(
    partial: dict[str, list[tuple[Any, ...]]], final: dict[str, list[tuple[Any, ...]]]
) -> None:
    """What an interrupted run left is whole five-minute intervals of the final database."""
    assert partial != final
    for table in ("service_rows", "cell_rows", "ledger"):
        five_minute = [row for row in partial[table] if row[2] == IntervalType.FIVE_MINUTES]
        assert set(five_minute) <= set(final[table]), table
    for table in ("files", "states"):
        assert set(partial[table]) <= set(final[table]), table
