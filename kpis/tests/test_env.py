"""Settings from the environment: typed, defaulted, and loud about bad values."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from network_analysis.env import (
    SettingError,
    cache_from_url,
    cpus_available,
    database_from_url,
    env_file_load,
    env_secret,
    envaddress,
    envbool,
    envint,
    envlist,
    state_location,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("On", True),
        ("0", False),
        ("false", False),
        ("NO", False),
        ("off", False),
        ("", True),
    ],
)
def test_booleans_accept_the_usual_spellings(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool
) -> None:
    monkeypatch.setenv("FLAG", raw)
    assert envbool("FLAG", True) is expected


def test_a_malformed_boolean_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPI_API_PUBLIC", "maybe")
    with pytest.raises(SettingError, match="KPI_API_PUBLIC='maybe' is not a boolean: use one of"):
        envbool("KPI_API_PUBLIC", False)


def test_integers_are_checked_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPI_TOP_N", "5")
    assert envint("KPI_TOP_N", 3, minimum=1) == 5
    monkeypatch.setenv("KPI_TOP_N", "0")
    with pytest.raises(
        SettingError,
        match=re.escape("KPI_TOP_N='0' is less than 1: use a whole number of at least 1."),
    ):
        envint("KPI_TOP_N", 3, minimum=1)
    monkeypatch.setenv("KPI_TOP_N", "3.5")
    with pytest.raises(
        SettingError,
        match=re.escape("KPI_TOP_N='3.5' is not a whole number: use a whole number of at least 1."),
    ):
        envint("KPI_TOP_N", 3, minimum=1)
    monkeypatch.delenv("KPI_TOP_N")
    assert envint("KPI_TOP_N", 3) == 3


def test_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTS", " a.example , b.example,, ")
    assert envlist("HOSTS", []) == ["a.example", "b.example"]


def test_a_missing_secret_is_generated_once_and_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SOME_SECRET", raising=False)
    first = env_secret("SOME_SECRET", tmp_path / "secret")
    assert len(first) >= 50
    assert env_secret("SOME_SECRET", tmp_path / "secret") == first
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600


def test_a_short_secret_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOME_SECRET", "short")
    with pytest.raises(
        SettingError, match="SOME_SECRET=<5 characters> is too short: use at least 32"
    ):
        env_secret("SOME_SECRET", tmp_path / "secret")


def test_a_mysql_url_becomes_a_strict_utf8mb4_database(tmp_path: Path) -> None:
    db = database_from_url("mysql://kpi:p%40ss@db.internal:3307/network", base_dir=tmp_path)
    assert db["ENGINE"] == "django.db.backends.mysql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "network",
        "kpi",
        "p@ss",
        "db.internal",
        "3307",
    )
    assert db["OPTIONS"]["charset"] == "utf8mb4"
    assert "STRICT_TRANS_TABLES" in db["OPTIONS"]["init_command"]


def test_a_sqlite_url_is_relative_to_the_project(tmp_path: Path) -> None:
    db = database_from_url("sqlite:///kpis.sqlite3", base_dir=tmp_path)
    assert db["NAME"] == str(tmp_path / "kpis.sqlite3")
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]
    assert (
        database_from_url("sqlite:////var/lib/kpis.db", base_dir=tmp_path)["NAME"]
        == "/var/lib/kpis.db"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://x/y", "has a scheme ('postgres') that is not supported"),
        (
            "mysql://root:secret@localhost:3306/",
            "'mysql://root:***@localhost:3306/' has no database",
        ),
        ("mysql://root@localhost:port/db", "has a port that is not a number"),
        ("sqlite://", "has no file path"),
    ],
)
def test_a_bad_database_url_is_refused(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(SettingError, match=re.escape(message)) as raised:
        database_from_url(url, base_dir=tmp_path)
    assert "secret" not in str(raised.value)
    assert str(raised.value).endswith(
        ": use sqlite:///relative.db, sqlite:////absolute.db or mysql://user:password@host:3306/name."
    )


@pytest.mark.django_db
def test_sqlite_runs_in_wal_mode_so_readers_never_wait() -> None:
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("a SQLite setting")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "raw", ["127.0.0.1:8786", "http://host:8786", "tcp://host", "tcp://:8786", "tcp://h:port"]
)
def test_a_scheduler_address_needs_a_scheme_a_host_and_a_port(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("KPI_DASK_SCHEDULER", raw)
    with pytest.raises(SettingError, match="is not an address: use one like tcp://host:8786"):
        envaddress("KPI_DASK_SCHEDULER", schemes=("tcp", "tls"))


def test_a_scheduler_address_is_kept_as_given_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPI_DASK_SCHEDULER", " tcp://dask.example:8786 ")
    assert envaddress("KPI_DASK_SCHEDULER", schemes=("tcp",)) == "tcp://dask.example:8786"
    monkeypatch.delenv("KPI_DASK_SCHEDULER")
    assert envaddress("KPI_DASK_SCHEDULER", schemes=("tcp",)) == ""


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        ("KPI_WORKERS", "0", "KPI_WORKERS='0' is less than 1"),
        ("KPI_WORKERS", "all", "KPI_WORKERS='all' is not a whole number"),
        ("KPI_DASK_SCHEDULER", "dask:8786", "KPI_DASK_SCHEDULER='dask:8786' is not an address"),
        ("KPI_STATE_PARTITIONS", "12", "KPI_STATE_PARTITIONS='12' is not a power of two"),
        ("KPI_STATE_PARTITIONS", "2048", "KPI_STATE_PARTITIONS='2048' is more than 1024"),
        ("KPI_READ_RANGE_BYTES", "100", "KPI_READ_RANGE_BYTES='100' is less than 4096"),
    ],
)
def test_bad_executor_settings_stop_start_up(variable: str, raw: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import network_analysis.settings"],
        env={**os.environ, variable: raw},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert message in result.stderr


def test_a_state_folder_is_made_absolute_and_a_bucket_kept(tmp_path: Path) -> None:
    assert state_location("s3://states/kpis/") == "s3://states/kpis"
    relative = os.path.relpath(tmp_path / "state")
    assert state_location(relative) == str(tmp_path / "state")


def test_workers_default_to_the_cpus_this_process_may_use() -> None:
    environment = {k: v for k, v in os.environ.items() if k != "KPI_WORKERS"}
    script = "from network_analysis import settings; print(settings.KPI_WORKERS)"
    pinned = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
    )
    assert pinned.stdout.strip() == "1"
    free = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True
    )
    assert free.stdout.strip() == str(cpus_available())
    assert cpus_available() == len(os.sched_getaffinity(0))


def test_the_cache_is_the_database_unless_a_url_names_another() -> None:
    assert cache_from_url("") == {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "kpi_cache",
    }
    assert cache_from_url("redis://:secret@10.0.0.5:6380/2?prefix=site-a&socket_timeout=2") == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://:secret@10.0.0.5:6380/2?socket_timeout=2",
        "KEY_PREFIX": "site-a",
    }
    assert cache_from_url("unix:///run/redis.sock")["KEY_PREFIX"] == "kpi"
    assert cache_from_url("locmem://")["BACKEND"].endswith("LocMemCache")


def test_an_unknown_cache_scheme_stops_start_up() -> None:
    with pytest.raises(
        SettingError, match=re.escape("CACHE_URL='memcached://127.0.0.1:11211' has")
    ):
        cache_from_url("memcached://127.0.0.1:11211")
    with pytest.raises(SettingError, match=re.escape("CACHE_URL='memcache://:***@h:1' has")):
        cache_from_url("memcache://:hidden@h:1")


BAD_SETTINGS = [
    (
        "KPI_TOP_N",
        "abc",
        "KPI_TOP_N='abc' is not a whole number: use a whole number of at least 1.",
    ),
    ("KPI_TOP_N", "0", "KPI_TOP_N='0' is less than 1: use a whole number of at least 1."),
    (
        "KPI_LOG_FORMAT",
        "xml",
        "KPI_LOG_FORMAT='xml' is not allowed: use one of text, json.",
    ),
    (
        "KPI_API_THROTTLE_USER",
        "lots",
        "KPI_API_THROTTLE_USER='lots' is not a rate: use <count>/<second|minute|hour|day>, "
        "e.g. 60/minute.",
    ),
]


def run_python(
    *args: str, env: dict[str, str], unset: Iterable[str] = (), timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    """Run Python in the project folder with ``env`` added and the ``unset`` variables removed."""
    removed = set(unset)
    return subprocess.run(
        [sys.executable, *args],
        env={**{k: v for k, v in os.environ.items() if k not in removed}, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )


@pytest.mark.parametrize(("variable", "raw", "line"), BAD_SETTINGS)
def test_a_bad_setting_stops_a_command_with_one_line(variable: str, raw: str, line: str) -> None:
    result = run_python("manage.py", "update_network_stats", "--no-progress", env={variable: raw})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: {line}"]
    assert result.stdout == ""


@pytest.mark.parametrize(("variable", "raw", "line"), BAD_SETTINGS[:2])
def test_a_bad_setting_stops_the_development_server_with_one_line(
    variable: str, raw: str, line: str
) -> None:
    result = run_python(
        "manage.py", "runserver", "127.0.0.1:0", "--noreload", env={variable: raw}, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: {line}"]


def test_a_bad_setting_stops_gunicorn_without_a_traceback() -> None:
    variable, raw, line = BAD_SETTINGS[1]
    result = run_python(
        *("-m", "gunicorn", "network_analysis.wsgi:application", "--workers", "1"),
        *("--bind", "127.0.0.1:0", "--no-control-socket"),
        env={variable: raw},
        timeout=60,
    )
    # Its one line, and gunicorn stops (3: a worker failed to boot) instead of retrying.
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    assert f"error: {line}" in lines
    assert "Reason: Worker failed to boot." in result.stderr
    assert "Traceback" not in result.stderr
    assert "KeyError" not in result.stderr


def test_the_env_file_fills_in_what_the_environment_leaves_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "# a comment\nKPI_TOP_N=7\nKPI_GRACE_SECONDS=5\nDATABASE_URL=mysql://u:pa$$word@h/db\n"
        "KPI_LOG_FORMAT=json\nKPI_DASK_SCHEDULER=tcp://${HOST}:8786\n"
    )
    monkeypatch.delenv("KPI_ENV_FILE", raising=False)
    # Empty is unset: the file fills them in (and monkeypatch restores them afterwards).
    for name in ("KPI_TOP_N", "KPI_LOG_FORMAT", "KPI_DASK_SCHEDULER"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("KPI_GRACE_SECONDS", "9")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///kept.db")

    assert env_file_load(base_dir=tmp_path) == tmp_path / ".env"

    assert os.environ["KPI_TOP_N"] == "7"
    assert os.environ["KPI_GRACE_SECONDS"] == "9"  # the environment wins
    assert os.environ["DATABASE_URL"] == "sqlite:///kept.db"
    assert os.environ["KPI_LOG_FORMAT"] == "json"
    assert os.environ["KPI_DASK_SCHEDULER"] == "tcp://${HOST}:8786"  # taken literally


def test_without_an_env_file_nothing_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KPI_ENV_FILE", raising=False)
    assert env_file_load(base_dir=tmp_path) is None


SETTINGS_SHOWN = (
    "from django.conf import settings as s;"
    "print(repr((s.KPI_TOP_N, s.KPI_GRACE_SECONDS, s.DEBUG, s.ALLOWED_HOSTS, s.KPI_WORKERS,"
    " s.DATABASES['default']['NAME'], s.CACHES, s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'],"
    " s.KPI_LOG_LEVEL, s.KPI_LOG_FORMAT, s.KPI_RESTATE_DAYS, s.KPI_DASK_SCHEDULER)))"
)


def settings_shown(env: dict[str, str], unset: Iterable[str] = ()) -> str:
    result = run_python(
        "-c",
        SETTINGS_SHOWN,
        env={"DJANGO_SETTINGS_MODULE": "network_analysis.settings", **env},
        unset=unset,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_file_kpi_env_file_names_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / "kpi.env"
    env_file.write_text("KPI_TOP_N=7\nKPI_GRACE_SECONDS=5\nKPI_LOG_FORMAT=json\n")
    shown = settings_shown({"KPI_ENV_FILE": str(env_file), "KPI_GRACE_SECONDS": "9"})
    assert shown.startswith("(7, 9, ")
    assert "'json'" in shown


def test_env_example_copied_as_it_is_gives_the_defaults() -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    names = re.findall(r"^([A-Z0-9_]+)=", example.read_text(), re.M)
    assert len(names) > 20
    assert settings_shown({"KPI_ENV_FILE": str(example)}, unset=names) == settings_shown(
        {}, unset=names
    )


def test_a_missing_env_file_is_one_line() -> None:
    result = run_python("manage.py", "check", env={"KPI_ENV_FILE": "/nonexistent/kpi.env"})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: KPI_ENV_FILE='/nonexistent/kpi.env' is not a file: name a file of NAME=value "
        "lines, or leave it unset to read .env in the project."
    ]
