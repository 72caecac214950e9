"""The database goes away at start or mid-run: a clear error, nothing partial, full recovery.

A private MariaDB server with its own temporary data folder and port is
started for these tests and stopped at will; the shared server is never touched.
"""

from __future__ import annotations

import datetime
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

from kpis.sampledata import Population, write_sample_files
from kpis.tests.conftest import command_process, utc
from kpis.tests.faults import Snapshot, assert_part_of, fault_env

MARIADBD = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
INSTALL_DB = shutil.which("mariadb-install-db")
NOW = "2026-01-05T02:10Z"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MARIADBD is None or INSTALL_DB is None, reason="mariadbd is not installed"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PrivateMariaDB:
    """A throw-away MariaDB server on loopback."""

    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None
        self.process = subprocess.Popen(
            [
                str(MARIADBD),
                "--no-defaults",
                f"--datadir={self.folder / 'data'}",
                "--user=root",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.folder / 'sock'}",
                f"--pid-file={self.folder / 'pid'}",
                f"--log-error={self.folder / 'error.log'}",
                "--innodb-buffer-pool-size=64M",
                "--skip-log-bin",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while self.sql("SELECT 1").returncode != 0:
            assert self.process.poll() is None, (self.folder / "error.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the private MariaDB did not start"
            time.sleep(0.1)

    def kill(self) -> None:
        """Stop the server abruptly, as a crash or a pulled plug would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
            self.process = None

    def sql(self, sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "mariadb",
                "--protocol=tcp",
                "-h127.0.0.1",
                f"-P{self.port}",
                "-uroot",
                "-e",
                sql,
            ],
            capture_output=True,
            text=True,
        )

    def url(self, name: str) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="module")
def private_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    folder = tmp_path_factory.mktemp("mariadb")
    subprocess.run(
        [
            str(INSTALL_DB),
            "--no-defaults",
            f"--datadir={folder / 'data'}",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
    )
    server = PrivateMariaDB(folder, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


def manage(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start manage.py on the private server's database ``url``."""
    return command_process(
        *args,
        env={
            "DATABASE_URL": url,
            "KPI_SUBSCRIBER_KEY": settings.KPI_SUBSCRIBER_KEY,
            "KPI_LOG_LEVEL": "INFO",
            **(env or {}),
        },
    )


def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    process = manage(url, *args)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


SNAPSHOT = "from kpis.tests.faults import database_snapshot; print(repr(database_snapshot()))"


def snapshot(url: str) -> Snapshot:
    """The whole stored state of the database at ``url`` (see ``database_snapshot``)."""
    text = run(url, "shell", "-v", "0", "-c", SNAPSHOT).stdout
    return eval(text, {"datetime": datetime})  # our own repr of plain values


def update(url: str, folder: Path, *, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return manage(
        url,
        "update_network_stats",
        "--now",
        NOW,
        "--input-dir",
        str(folder),
        "--no-progress",
        env=env,
    )


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("input")
    write_sample_files(
        folder,
        start=utc("2026-01-05T00:00"),
        intervals=18,
        parts=2,
        rows=300,
        population=Population(subscribers=400, cells=30, services=25, seed=5),
    )
    return folder


@pytest.fixture(scope="module")
def reference(private_mariadb: PrivateMariaDB, input_dir: Path) -> Snapshot:
    """The database an uninterrupted run leaves, on the same server."""
    assert private_mariadb.sql("CREATE DATABASE reference").returncode == 0
    url = private_mariadb.url("reference")
    run(url, "migrate", "--no-input", "-v", "0")
    done = update(url, input_dir)
    assert done.wait(timeout=300) == 0, done.communicate()[1]
    return snapshot(url)


@pytest.fixture
def fresh_database(private_mariadb: PrivateMariaDB, request: pytest.FixtureRequest) -> str:
    name = "outage_" + request.node.name.split("[")[-1].strip("]").replace("-", "_")[:40]
    assert private_mariadb.sql(f"CREATE DATABASE {name}").returncode == 0
    url = private_mariadb.url(name)
    run(url, "migrate", "--no-input", "-v", "0")
    return url


def assert_error_names_the_database(stderr: str) -> None:
    assert "database error, nothing half-written was kept" in stderr, stderr
    assert "Traceback" not in stderr, stderr


def test_a_run_without_its_database_fails_clearly_and_the_next_one_does_everything(
    private_mariadb: PrivateMariaDB, input_dir: Path, reference: Snapshot, fresh_database: str
) -> None:
    private_mariadb.kill()
    try:
        failed = update(fresh_database, input_dir)
        _, stderr = failed.communicate(timeout=120)
    finally:
        private_mariadb.start()
    assert failed.returncode == 1
    assert_error_names_the_database(stderr)
    assert "Can't connect to server on '127.0.0.1'" in stderr

    recovered = update(fresh_database, input_dir)
    stdout, stderr = recovered.communicate(timeout=300)
    assert recovered.returncode == 0, stderr
    assert "intervals processed: 18 " in stdout
    assert snapshot(fresh_database) == reference


MID_RUN = {
    "between_intervals": "kpis.services.update:interval_persist:3:before",
    "inside_the_interval_transaction": "kpis.services.persist:file_states_replace:7:after",
    "inside_the_hour_roll_up": "kpis.services.persist:_kpi_rows_replace:13:after",
}


@pytest.mark.parametrize("pause_at", MID_RUN.values(), ids=MID_RUN.keys())
def test_losing_the_database_mid_run_leaves_no_partial_interval(
    pause_at: str,
    private_mariadb: PrivateMariaDB,
    input_dir: Path,
    reference: Snapshot,
    fresh_database: str,
    tmp_path: Path,
) -> None:
    pause = tmp_path / "pause"
    pause.mkdir()
    env = fault_env(tmp_path / "fi", PAUSE_AT=pause_at, PAUSE_DIR=str(pause))
    interrupted = update(fresh_database, input_dir, env=env)
    deadline = time.monotonic() + 120
    while not (pause / "paused").exists():
        assert interrupted.poll() is None, interrupted.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    private_mariadb.kill()
    (pause / "resume").touch()
    try:
        _, stderr = interrupted.communicate(timeout=120)
    finally:
        private_mariadb.start()
    assert interrupted.returncode == 1, stderr
    assert_error_names_the_database(stderr)
    # Django reconnects while closing the failed transaction, so either error may be named.
    assert re.search(r"Lost connection|Server has gone away|Can't connect to server", stderr)

    # Whatever was committed before the outage is whole: a part of the final database.
    assert_part_of(snapshot(fresh_database), reference)

    recovered = update(fresh_database, input_dir)
    _, stderr = recovered.communicate(timeout=300)
    assert recovered.returncode == 0, stderr
    assert "took over the lock of a run that died" in stderr
    assert snapshot(fresh_database) == reference
