"""Throttles: counted per slice of the period, and shared by every server process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache
from hypothesis import given
from hypothesis import strategies as st

from kpis.api.throttling import SLICES, SlicedRateThrottle
from kpis.tests.conftest import database_url

REDIS_URL = os.environ.get("KPI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_reachable() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except Exception:
        return False


@contextmanager
def servers(count: int, cache_url: str) -> Iterator[list[int]]:
    """``count`` separate gunicorn processes on the test database, anonymous rate 3/minute."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CACHE_URL": cache_url,
        "KPI_API_THROTTLE_ANON": "3/minute",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "KPI_LOG_LEVEL": "WARNING",
    }
    ports = [free_port() for _ in range(count)]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "network_analysis.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--log-level",
                "warning",
                "--chdir",
                str(Path(settings.BASE_DIR)),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    try:
        for port, process in zip(ports, processes, strict=True):
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert process.poll() is None, process.stderr.read() if process.stderr else ""
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.2)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
            if process.stderr:
                process.stderr.close()


def statuses(ports: list[int], requests: int) -> list[int]:
    """Anonymous requests to the KPI list, alternating between the servers."""
    seen = []
    for index in range(requests):
        url = f"http://127.0.0.1:{ports[index % len(ports)]}/api/KPIs/"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                seen.append(response.status)
        except urllib.error.HTTPError as error:
            seen.append(error.code)
            error.close()
    return seen


def cache_urls() -> list[object]:
    redis_url = f"{REDIS_URL}?prefix=kpi-test-{uuid.uuid4().hex}"  # never touches other keys
    return [
        pytest.param("", id="database"),
        pytest.param(
            redis_url,
            id="redis",
            marks=pytest.mark.skipif(not redis_reachable(), reason=f"no Redis at {REDIS_URL}"),
        ),
    ]


@pytest.mark.parametrize("cache_url", cache_urls())
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_anonymous_rate_holds_across_two_server_processes(cache_url: str) -> None:
    if cache_url == "":
        cache.clear()  # counters other tests' servers left in the shared table
    try:
        with servers(2, cache_url) as ports:
            seen = statuses(ports, 8)
    finally:
        if cache_url == "":
            cache.clear()
    # Three refusals for missing credentials, then the shared limit: 429 from both servers.
    assert seen == [401, 401, 401, 429, 429, 429, 429, 429]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_per_process_cache_would_let_each_process_count_alone() -> None:
    with servers(2, "locmem://") as ports:
        seen = statuses(ports, 8)
    assert seen == [401] * 6 + [429] * 2


class Clocked(SlicedRateThrottle):
    """A sliced throttle with one key, a cache of its own, and a clock the test sets."""

    scope = "clocked"

    def __init__(self, rate: str, storage: LocMemCache, now: float) -> None:
        self.rate, self.cache, self._now = rate, storage, now
        self.num_requests, self.duration = self.parse_rate(rate)  # type: ignore[assignment]

    def get_cache_key(self, request: Any, view: Any) -> str:
        return "one-client"

    def timer(self) -> float:
        return self._now


def fresh_cache() -> LocMemCache:
    return LocMemCache(f"throttle-{uuid.uuid4().hex}", {})


def ask(rate: str, storage: LocMemCache, now: float) -> tuple[bool, Clocked]:
    throttle = Clocked(rate, storage, now)  # DRF makes a throttle per request too
    return throttle.allow_request(None, None), throttle  # type: ignore[arg-type]


@hypothesis.settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=6),
    period=st.sampled_from(["second", "minute", "hour"]),
    gaps=st.lists(st.floats(min_value=0, max_value=1.5), min_size=1, max_size=60),
)
def test_the_rate_holds_in_every_window_and_refuses_only_at_the_limit(
    limit: int, period: str, gaps: list[float]
) -> None:
    """Against the exact rule: never more than ``limit`` allowed in any window of one period,
    and a refusal only when ``limit`` were allowed within the period plus one slice."""
    duration = {"second": 1, "minute": 60, "hour": 3600}[period]
    storage, moment, allowed = fresh_cache(), 0.0, []
    for gap in gaps:
        moment += gap * duration / 4
        granted, _ = ask(f"{limit}/{period}", storage, moment)
        if granted:
            allowed.append(moment)
            assert sum(moment - duration < then <= moment for then in allowed) <= limit
        else:
            reach = duration + duration / SLICES
            assert sum(moment - reach <= then for then in allowed) >= limit


def test_a_refused_client_may_ask_again_after_the_wait_it_is_given() -> None:
    storage = fresh_cache()
    for second in (0.5, 10.2, 20.7):
        assert ask("3/minute", storage, second)[0]
    granted, throttle = ask("3/minute", storage, 30.0)
    assert not granted
    wait = throttle.wait()
    assert wait is not None
    assert wait == pytest.approx(61.0 - 30.0)  # the slice of 0.5 s stops counting at 61 s
    assert not ask("3/minute", storage, 30.0 + wait - 0.5)[0]
    assert ask("3/minute", storage, 30.0 + wait)[0]


def test_the_stored_state_stays_small_whatever_the_traffic() -> None:
    storage = fresh_cache()
    for step in range(5000):
        ask("100000/minute", storage, step * 0.1)  # ten a second for over eight minutes
    _, counts = storage.get("one-client")
    assert len(counts) <= SLICES + 1
    assert sum(counts.values()) == 610  # the last 61 one-second slices


def test_a_new_period_starts_the_counts_afresh() -> None:
    storage = fresh_cache()
    for second in (1.0, 2.0, 3.0):
        assert ask("3/minute", storage, second)[0]
    assert not ask("3/minute", storage, 4.0)[0]
    # Minute slices numbered by the hour would look like slices far in the future.
    assert [ask("3/hour", storage, second)[0] for second in (5.0, 6.0, 7.0, 8.0)] == [
        True,
        True,
        True,
        False,
    ]


def test_a_clock_stepped_back_keeps_the_state_small() -> None:
    storage = fresh_cache()
    for second in range(1000, 1061):
        ask("100000/minute", storage, float(second))
    ask("100000/minute", storage, 500.0)
    _, counts = storage.get("one-client")
    assert len(counts) <= SLICES + 1


def test_the_counts_outlive_the_window_in_whole_seconds() -> None:
    """The database cache stores expiry times without their fraction of a second."""
    timeouts = []

    class Recording(LocMemCache):
        def set(self, key: Any, value: Any, timeout: Any = None, version: Any = None) -> None:
            timeouts.append(timeout)
            super().set(key, value, timeout, version)

    storage = Recording(f"throttle-{uuid.uuid4().hex}", {})
    ask("1/second", storage, 10.0)
    ask("5/minute", storage, 10.0)
    assert timeouts == [3, 62]  # at least one period and one slice, rounded up, plus a second
