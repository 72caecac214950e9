"""`make demo` and its commands: fresh sample data, a token kept across runs, a busy port first."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from rest_framework.authtoken.models import Token

from kpis.models import IntervalLedger, IntervalType
from kpis.tests.conftest import InputFolder

BASE_DIR = Path(settings.BASE_DIR)
PORT_FREE = BASE_DIR / "scripts" / "port_free.py"


def create_demo_user(*args: str) -> tuple[str, str]:
    """Run create_demo_user; return the password and the token it printed."""
    out = io.StringIO()
    call_command("create_demo_user", *args, stdout=out)
    found = re.search(r"password: (.+)\n(?:.|\n)*Authorization: Token (\w+)", out.getvalue())
    assert found, out.getvalue()
    return found[1], found[2]


@contextmanager
def listening() -> Iterator[int]:
    """A port on 127.0.0.1 that something listens on."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.django_db
def test_sample_data_ending_now_is_fresh_and_still_restatable(
    input_folder: InputFolder, client: Client
) -> None:
    written = io.StringIO()
    call_command(
        "generate_sample_data",
        *("--end", "now", "--hours", "1", "--rows", "200", "--subscribers", "100"),
        *("--cells", "20", "--output-dir", str(input_folder.path)),
        stdout=written,
    )
    summary = io.StringIO()
    call_command(
        "update_network_stats",
        *("--input-dir", str(input_folder.path), "--no-progress", "--workers", "1"),
        stdout=summary,
        stderr=io.StringIO(),
    )

    # Every interval written is due at once, and none of its hours is final.
    assert "intervals processed: 12 (changed: 12)" in summary.getvalue()
    assert "hours made final" not in summary.getvalue()
    assert not IntervalLedger.objects.filter(states_kept=False).exists()
    last_end = max(
        IntervalLedger.objects.filter(interval=IntervalType.FIVE_MINUTES).values_list(
            "interval_end_timestamp", flat=True
        )
    )
    due_by = datetime.now(UTC) - timedelta(seconds=settings.KPI_GRACE_SECONDS)
    assert due_by - timedelta(minutes=5) < last_end <= due_by
    assert f"to {last_end:%Y-%m-%dT%H:%MZ}" in written.getvalue()
    health = client.get("/api/health/")
    assert (health.status_code, health.json()["status"]) == (200, "ok")


def test_sample_data_takes_a_start_or_an_end_not_both(input_folder: InputFolder) -> None:
    with pytest.raises(CommandError, match="argument --end: not allowed with argument --start"):
        call_command(
            "generate_sample_data",
            *("--start", "2021-07-18T00:00Z", "--end", "now"),
            *("--output-dir", str(input_folder.path)),
        )


@pytest.mark.django_db
def test_the_demo_user_keeps_its_password_and_token_unless_rotated() -> None:
    password, token = create_demo_user()
    again_password, again_token = create_demo_user("--port", "8001")
    assert again_token == token
    assert again_password.startswith("unchanged")
    user = get_user_model().objects.get(username="demo")
    assert user.check_password(password)
    assert user.is_superuser and user.is_staff

    rotated_password, rotated_token = create_demo_user("--rotate")
    assert rotated_token != token
    assert not Token.objects.filter(key=token).exists()
    user.refresh_from_db()
    assert user.check_password(rotated_password)


@pytest.mark.django_db
def test_a_demo_user_made_another_way_gets_a_token_and_keeps_its_password() -> None:
    get_user_model().objects.create_user("demo", password="chosen-by-the-user-1")
    password, token = create_demo_user()
    assert password.startswith("unchanged")
    assert Token.objects.get(user__username="demo").key == token
    assert get_user_model().objects.get(username="demo").check_password("chosen-by-the-user-1")


def test_the_port_check_names_a_busy_port_and_another_to_use() -> None:
    with listening() as port:
        busy = subprocess.run(
            [sys.executable, str(PORT_FREE), "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            check=False,
        )
    assert busy.returncode == 1
    assert busy.stderr.startswith(f"port {port} on 127.0.0.1 is not free")
    assert busy.stderr.rstrip().endswith(f"make demo PORT={port + 1}")
    free = subprocess.run(
        [sys.executable, str(PORT_FREE), "127.0.0.1", str(port)], capture_output=True, check=False
    )
    assert free.returncode == 0


def test_make_demo_on_a_busy_port_stops_before_it_changes_anything(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    with listening() as port:
        result = subprocess.run(
            ["make", "--no-print-directory", "demo", f"PORT={port}", f"VENV={venv}"],
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is not free" in result.stderr
    # The port is the first thing checked: no virtualenv was even made.
    assert not venv.exists()
    assert result.stdout == ""


# --- The acceptance test: make demo from a fresh copy, twice ----------------------------------


def fresh_copy(target: Path) -> Path:
    """The project's files as a fresh clone has them (times kept, so the virtualenv is reused)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=BASE_DIR,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = BASE_DIR / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def http_get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@contextmanager
def make_demo(project: Path, port: int, log: Path) -> Iterator[str]:
    """Run `make demo` in ``project`` until its server answers; yield the token it printed."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KPI_", "DJANGO_", "DATABASE_URL", "CACHE_URL"))
    }
    venv = Path(sys.executable).parent.parent
    with log.open("w") as output:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "demo", f"PORT={port}", f"VENV={venv}"],
            cwd=project,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            token = re.search(r"Authorization: Token (\w+)", log.read_text())
            if token:
                try:
                    http_get(f"http://127.0.0.1:{port}/api/health/")
                except OSError:
                    pass  # not listening yet
                else:
                    yield token[1]
                    return
            time.sleep(0.5)
        raise AssertionError(f"make demo did not serve:\n{log.read_text()}")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


@pytest.mark.slow
def test_make_demo_serves_fresh_data_and_keeps_its_token(tmp_path: Path) -> None:
    project = fresh_copy(tmp_path / "project")
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    with make_demo(project, port, tmp_path / "first.log") as token:
        assert http_get(f"{base}/api/health/")[0] == 200
        status, body = http_get(f"{base}/api/KPIs/1/?interval=1", token)
        assert status == 200 and body.startswith(b"[{")
        # A second `make demo` while the first serves: refused at once, nothing rotated.
        second = subprocess.run(
            ["make", "--no-print-directory", "demo", f"PORT={port}"],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        assert f"port {port} on 127.0.0.1 is not free" in second.stderr
        assert http_get(f"{base}/api/KPIs/", token)[0] == 200

    with make_demo(project, port, tmp_path / "again.log") as again:
        assert again == token
        assert http_get(f"{base}/api/health/")[0] == 200
        assert "password: unchanged" in (tmp_path / "again.log").read_text()
