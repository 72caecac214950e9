"""The update lease: one run works at a time; the lease of a run that died is taken over."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.db import DatabaseError, IntegrityError
from django.db.models import Q
from django.utils import timezone

from kpis.models import (
    RunLock,
)

logger = logging.getLogger("kpis.update")

UPDATE_LOCK_NAME = "update_network_stats"
_HEARTBEAT_EVERY_SECONDS = 30.0


class LockBusy(Exception):
    """Another run holds the update lock."""


def _holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_is_dead(holder: str) -> bool:
    """True when ``holder`` is a process of this host that no longer exists."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def run_lock_acquire(*, name: str, holder: str, stale_after: timedelta) -> bool:
    """Take the named lease if it is free, stale, or held by a dead local process."""
    with contextlib.suppress(IntegrityError):  # created by a concurrent run a moment ago
        RunLock.objects.get_or_create(name=name)
    now = timezone.now()
    free = Q(holder="") | Q(heartbeat_at__lt=now - stale_after)
    if RunLock.objects.filter(free, name=name).update(holder=holder, heartbeat_at=now):
        return True
    current = RunLock.objects.filter(name=name).values_list("holder", flat=True).first()
    if current and _holder_is_dead(current):
        # Compare-and-swap on the old holder: of several contenders, one wins.
        taken = RunLock.objects.filter(name=name, holder=current).update(
            holder=holder, heartbeat_at=now
        )
        if taken:
            logger.warning("took over the lock of a run that died: %s", current)
        return bool(taken)
    return False


def run_lock_heartbeat(*, name: str, holder: str) -> None:
    """Renew the lease; raise if another run has taken it over meanwhile."""
    if not RunLock.objects.filter(name=name, holder=holder).update(heartbeat_at=timezone.now()):
        raise LockBusy("the update lock was taken over by another run")


def run_lock_release(*, name: str, holder: str) -> None:
    RunLock.objects.filter(name=name, holder=holder).update(holder="", heartbeat_at=None)


@contextmanager
def run_lock(
    *, stale_after: timedelta, name: str = UPDATE_LOCK_NAME
) -> Iterator[Callable[[], None]]:
    """Hold the update lock for the block; yield a rate-limited heartbeat function."""
    holder = _holder_id()
    if not run_lock_acquire(name=name, holder=holder, stale_after=stale_after):
        raise LockBusy("another update_network_stats run is in progress")
    last = time.monotonic()

    def heartbeat() -> None:
        nonlocal last
        if time.monotonic() - last >= _HEARTBEAT_EVERY_SECONDS:
            run_lock_heartbeat(name=name, holder=holder)
            last = time.monotonic()

    try:
        yield heartbeat
    except BaseException:
        # If the database is gone, releasing fails too; report the first error, not
        # that one. A lease left behind is taken over once this process has exited.
        with contextlib.suppress(DatabaseError):
            run_lock_release(name=name, holder=holder)
        raise
    run_lock_release(name=name, holder=holder)
