"""Throttle counters shared by every server process through the configured cache."""

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

import pytest
from django.conf import settings
from django.core.cache import cache

from kpis.tests.conftest import database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

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


def test_a_per_process_cache_would_let_each_process_count_alone() -> None:
    with servers(2, "locmem://") as ports:
        seen = statuses(ports, 8)
    assert seen == [401] * 6 + [429] * 2
