"""/api/health/ and /metrics: what a monitor sees, read from real runs of the command."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db.models import Sum
from django.test import override_settings
from django.utils import timezone
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from kpis.models import InputFileRecord, IntervalLedger, UpdateRun
from kpis.selectors import data_health
from kpis.tests.conftest import InputFolder, LiveApi, RunResult, command_process, utc

NOW = "2021-07-18T01:10:00Z"
GOOD = [
    ("4917000001", "10", "1", "100", "900"),
    ("4917000002", "10", "2", "50", "50"),
    ("4917000003", "11", "1", "10", "10"),
]
BAD_ROW = ("4917000004", "11", "1", "-5", "10")  # negative: rejected, the rest counted
BAD_HEADER = ("msisdn", "cell_id")  # the file cannot be read at all


@pytest.fixture(autouse=True)
def _fresh_throttles(request: pytest.FixtureRequest) -> Iterator[None]:
    # The throttle counters live in the database cache: only tests with a database have them.
    if request.node.get_closest_marker("django_db") is None:
        yield
        return
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


@pytest.fixture
def token() -> str:
    user = get_user_model().objects.create_user("prometheus", password="x" * 20)
    return Token.objects.create(user=user).key


def health(client: APIClient) -> tuple[int, dict[str, Any]]:
    response = client.get("/api/health/")
    return response.status_code, json.loads(response.content)


Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(client: APIClient, authorization: str) -> Samples:
    """Every sample of /metrics by name and labels."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def five_minute_grid(moment: datetime) -> datetime:
    return moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)


# --- /api/health/ ----------------------------------------------------------------


@pytest.mark.django_db
def test_health_is_503_empty_before_anything_was_processed(anonymous: APIClient) -> None:
    assert health(anonymous) == (
        503,
        {"status": "empty", "latest_interval_end": None, "lag_seconds": None},
    )


@pytest.mark.django_db
def test_health_is_200_ok_when_the_newest_interval_is_recent(
    anonymous: APIClient, input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    start = five_minute_grid(datetime.now(UTC)) - timedelta(minutes=10)
    input_folder.write(f"{start:%Y-%m-%dT%H:%M}", GOOD)
    assert run_update(datetime.now(UTC).isoformat()).exit_code == 0
    end = start + timedelta(minutes=5)

    before = datetime.now(UTC)
    status, body = health(anonymous)
    after = datetime.now(UTC)

    assert status == 200
    assert body.keys() == {"status", "latest_interval_end", "lag_seconds"}
    assert body["status"] == "ok"
    assert body["latest_interval_end"] == f"{end:%Y-%m-%dT%H:%M:%S}Z"
    assert int((before - end).total_seconds()) <= body["lag_seconds"]
    assert body["lag_seconds"] <= int((after - end).total_seconds())


@pytest.mark.django_db
def test_health_is_503_stale_when_the_newest_interval_is_too_old(
    anonymous: APIClient,
    input_folder: InputFolder,
    run_update: Callable[..., RunResult],
    settings: Any,
) -> None:
    input_folder.write("2021-07-18T00:00", GOOD)
    input_folder.write("2021-07-18T00:05", GOOD[:2])
    assert run_update(NOW).exit_code == 0
    lag = int((datetime.now(UTC) - utc("2021-07-18T00:10")).total_seconds())

    status, body = health(anonymous)

    assert status == 503
    assert body["status"] == "stale"
    assert body["latest_interval_end"] == "2021-07-18T00:10:00Z"
    assert lag <= body["lag_seconds"] <= lag + 60
    # The threshold is the setting: a lag within it is fine.
    settings.KPI_HEALTH_MAX_LAG_SECONDS = lag + 3600
    assert health(anonymous)[1]["status"] == "ok"


@pytest.mark.django_db
def test_broken_files_do_not_make_the_data_look_fresh(
    anonymous: APIClient,
    input_folder: InputFolder,
    run_update: Callable[..., RunResult],
    settings: Any,
    token: str,
) -> None:
    # Good data up to 00:05, then an hour of probes writing nothing but broken files.
    input_folder.write("2021-07-18T00:00", GOOD)
    for minute in range(5, 65, 5):
        moment = utc("2021-07-18T00:00") + timedelta(minutes=minute)
        input_folder.write(f"{moment:%Y-%m-%dT%H:%M}", GOOD, header=BAD_HEADER)
    input_folder.write("2021-07-18T00:25", [BAD_ROW])  # read, but every row rejected
    assert run_update("2021-07-18T01:10:30Z").exit_code == 1
    newest = IntervalLedger.objects.filter(interval=1).latest("interval_start_timestamp")
    assert (newest.interval_end_timestamp, newest.revision) == (utc("2021-07-18T01:05"), 1)
    settings.KPI_HEALTH_MAX_LAG_SECONDS = 900
    with pytest.MonkeyPatch.context() as clock:
        clock.setattr(timezone, "now", lambda: utc("2021-07-18T01:06"))
        status, body = health(anonymous)
    samples = scrape(anonymous, f"Token {token}")

    assert (status, body["status"]) == (503, "stale")
    assert body["latest_interval_end"] == "2021-07-18T00:05:00Z"
    assert body["lag_seconds"] == 3660
    assert value(samples, "kpi_latest_interval_end_timestamp_seconds") == (
        utc("2021-07-18T00:05").timestamp()
    )


@pytest.mark.parametrize("value", ["15m", "0"])
def test_a_malformed_maximum_lag_stops_start_up_naming_it(value: str) -> None:
    process = command_process("check", env={"KPI_HEALTH_MAX_LAG_SECONDS": value})
    _, stderr = process.communicate(timeout=300)

    assert process.returncode != 0
    assert "KPI_HEALTH_MAX_LAG_SECONDS" in stderr


@pytest.mark.django_db
def test_the_lag_may_reach_the_maximum_but_not_pass_it(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    input_folder.write("2021-07-18T00:00", GOOD)
    assert run_update(NOW).exit_code == 0
    end = utc("2021-07-18T00:05")

    at_limit = data_health(now=end + timedelta(seconds=900), max_lag_seconds=900)
    past_it = data_health(now=end + timedelta(seconds=901), max_lag_seconds=900)

    assert (at_limit.status, at_limit.lag_seconds) == ("ok", 900)
    assert (past_it.status, past_it.lag_seconds) == ("stale", 901)


@pytest.mark.django_db
def test_health_ignores_credentials_and_reveals_nothing_else(
    anonymous: APIClient, input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> None:
    input_folder.write("2021-07-18T00:00", GOOD)
    run_update(NOW)

    response = anonymous.get("/api/health/", HTTP_AUTHORIZATION="Token not-a-real-token")

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert set(json.loads(response.content)) == {"status", "latest_interval_end", "lag_seconds"}


@pytest.fixture
def low_throttle_rates(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    rates = {"anon": "2/minute", "user": "5/minute", "health": "3/minute"}
    rest_framework = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    # DRF copies the rates onto the throttle class when it is imported.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    with override_settings(REST_FRAMEWORK=rest_framework):
        yield rates


@pytest.mark.django_db
@pytest.mark.usefixtures("low_throttle_rates")
def test_health_has_its_own_rate_apart_from_the_anonymous_api(anonymous: APIClient) -> None:
    statuses = [anonymous.get("/api/health/").status_code for _ in range(4)]
    api = [anonymous.get("/api/KPIs/").status_code for _ in range(3)]

    assert statuses == [503, 503, 503, 429]
    assert api == [401, 401, 429]


@pytest.mark.django_db
def test_health_answers_when_the_throttle_cache_cannot_be_read(anonymous: APIClient) -> None:
    missing_table = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "kpi_no_such_cache_table",
        }
    }
    with override_settings(CACHES=missing_table):
        assert health(anonymous)[1]["status"] == "empty"


SERVER = """
from wsgiref.simple_server import WSGIRequestHandler, make_server
from django.core.wsgi import get_wsgi_application

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=Quiet)
print(server.server_port, flush=True)
server.serve_forever()
"""


def closed_port() -> int:
    """A loopback port nothing listens on (the OS just handed it out and it was closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "database_url",
    [
        pytest.param(lambda tmp: f"sqlite:///{tmp}/no-such-folder/db.sqlite3", id="sqlite"),
        pytest.param(lambda tmp: f"mysql://root@127.0.0.1:{closed_port()}/kpi", id="mariadb"),
    ],
)
def test_health_is_503_when_the_database_is_unavailable(
    tmp_path: Path, database_url: Callable[[Path], str]
) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "network_analysis.settings",
        "DATABASE_URL": database_url(tmp_path),
    }
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/", timeout=60)
        body = json.loads(refused.value.read())
    finally:
        server.terminate()
        _, log = server.communicate(timeout=60)

    assert refused.value.code == 503
    assert body == {
        "status": "database unavailable",
        "latest_interval_end": None,
        "lag_seconds": None,
    }
    # The reason is in the server's log, not in the answer.
    assert "health check: the database is unavailable:" in log


def live_request(url: str, method: str = "GET", token: str | None = None) -> tuple[int, bytes]:
    """The status and body of one request to a live server, refusals included."""
    headers = {"Authorization": f"Token {token}"} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


@pytest.mark.parametrize("live_api_env", [{"KPI_HEALTH_MAX_LAG_SECONDS": "900"}])
def test_a_monitor_polling_gunicorn_leaves_no_error_and_no_warning(
    live_api: LiveApi, live_api_env: dict[str, str]
) -> None:
    answers = {
        "GET health": live_request(f"{live_api.url}/api/health/"),
        "HEAD health": live_request(f"{live_api.url}/api/health/", "HEAD"),
        "HEAD rows": live_request(f"{live_api.url}/api/KPIs/1/", "HEAD", live_api.token),
        "HEAD metrics": live_request(f"{live_api.url}/metrics", "HEAD", live_api.token),
        "HEAD login": live_request(f"{live_api.url}/admin/login/", "HEAD"),
    }
    log = live_api.log.read_text()

    # The generated data lies years back: stale.
    assert answers["GET health"][0] == 503
    assert json.loads(answers["GET health"][1])["status"] == "stale"
    assert {name: status for name, (status, _) in answers.items()} == {
        "GET health": 503,
        "HEAD health": 503,
        "HEAD rows": 200,
        "HEAD metrics": 200,
        "HEAD login": 200,
    }
    assert all(body == b"" for name, (_, body) in answers.items() if name.startswith("HEAD"))
    assert "Service Unavailable" not in log
    assert " ERROR " not in log
    assert "no-body response" not in log


def test_a_head_answer_has_the_headers_of_a_get_and_no_body(
    db: None, wsgi_keeps_the_test_connection: None
) -> None:
    from network_analysis.wsgi import application

    def call(method: str) -> tuple[str, dict[str, str], bytes]:
        started: list[tuple[str, list[tuple[str, str]]]] = []
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": "/api/health/",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
        }

        def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> Any:
            started.append((status, headers))

        chunks = application(environ, start_response)
        body = b"".join(chunks)
        status, headers = started[0]
        return status, dict(headers), body

    get, head = call("GET"), call("HEAD")

    assert get[0] == head[0] == "503 Service Unavailable"
    assert head[2] == b"" and get[2]
    assert head[1]["Content-Length"] == get[1]["Content-Length"] == str(len(get[2]))
    assert head[1]["ETag"] == get[1]["ETag"]


# --- /metrics --------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_need_a_token_or_a_session(anonymous: APIClient, token: str) -> None:
    refused = anonymous.get("/metrics")
    wrong = anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer not-a-real-token")

    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == "Token"
    assert "credentials were not provided" in refused.json()["detail"]
    assert wrong.status_code == 401
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    # What Prometheus sends by default:
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    session = APIClient()
    session.force_login(Token.objects.get(key=token).user)
    assert session.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_metrics_are_public_with_a_public_api(anonymous: APIClient, settings: Any) -> None:
    settings.KPI_API_PUBLIC = True

    assert anonymous.get("/metrics").status_code == 200


@pytest.fixture
def a_run_with_a_failed_file(
    input_folder: InputFolder, run_update: Callable[..., RunResult]
) -> RunResult:
    input_folder.write("2021-07-18T00:00", [*GOOD, BAD_ROW])
    input_folder.write("2021-07-18T00:05", GOOD[:2])
    input_folder.write("2021-07-18T00:05", [*GOOD, BAD_ROW], part=1)  # a duplicate delivery
    input_folder.write("2021-07-18T00:10", GOOD, header=BAD_HEADER)
    result = run_update(NOW)
    assert result.exit_code == 1
    return result


@pytest.mark.django_db
def test_metrics_after_a_run_match_the_ledger_and_show_the_failed_run(
    a_run_with_a_failed_file: RunResult, anonymous: APIClient, token: str
) -> None:
    samples = scrape(anonymous, f"Token {token}")

    # The interval 00:10-00:15 was processed, but its only file failed: 00:05-00:10 is the
    # newest with data.
    assert value(samples, "kpi_latest_interval_end_timestamp_seconds") == (
        utc("2021-07-18T00:10").timestamp()
    )
    files = {labels[0][1]: count for labels, count in samples["kpi_ledger_files"].items()}
    assert files == {"counted": 2, "failed": 1, "duplicate": 1, "too_late": 0}
    for status, count in files.items():
        assert InputFileRecord.objects.filter(status=status).count() == count
    ledger = IntervalLedger.objects.filter(interval=1).aggregate(
        accepted=Sum("rows_accepted"), rejected=Sum("rows_rejected")
    )
    assert value(samples, "kpi_ledger_rows", result="accepted") == 5 == ledger["accepted"]
    assert value(samples, "kpi_ledger_rows", result="rejected") == 1 == ledger["rejected"]

    run = UpdateRun.objects.get()
    assert value(samples, "kpi_update_last_run_end_timestamp_seconds") == (
        run.finished_at.timestamp()
    )
    assert value(samples, "kpi_update_last_run_duration_seconds") == run.duration_seconds > 0
    assert value(samples, "kpi_update_last_run_exit_status") == 1
    assert value(samples, "kpi_update_runs", exit_status="1") == 1
    assert value(samples, "kpi_update_runs", exit_status="0") == 0
    assert value(samples, "kpi_update_last_failure_timestamp_seconds") == (
        run.finished_at.timestamp()
    )
    assert "kpi_update_last_success_timestamp_seconds" not in samples


@pytest.mark.django_db
def test_a_failed_run_stays_visible_after_a_good_one(
    a_run_with_a_failed_file: RunResult,
    input_folder: InputFolder,
    run_update: Callable[..., RunResult],
    token: str,
) -> None:
    failed = UpdateRun.objects.get()
    input_folder.write("2021-07-18T00:10", GOOD[1:])  # the broken file, fixed in place
    assert run_update(NOW).exit_code == 0
    good = UpdateRun.objects.exclude(id=failed.id).get()

    samples = scrape(APIClient(), f"Bearer {token}")

    assert value(samples, "kpi_update_last_run_exit_status") == 0
    assert value(samples, "kpi_update_last_run_end_timestamp_seconds") == (
        good.finished_at.timestamp()
    )
    assert value(samples, "kpi_update_runs", exit_status="0") == 1
    assert value(samples, "kpi_update_runs", exit_status="1") == 1
    assert value(samples, "kpi_update_last_success_timestamp_seconds") == (
        good.finished_at.timestamp()
    )
    assert value(samples, "kpi_update_last_failure_timestamp_seconds") == (
        failed.finished_at.timestamp()
    )
    files = {labels[0][1]: count for labels, count in samples["kpi_ledger_files"].items()}
    assert files == {"counted": 3, "failed": 0, "duplicate": 1, "too_late": 0}


@pytest.mark.django_db
def test_metrics_before_any_run_have_zero_counts_and_no_times(token: str) -> None:
    samples = scrape(APIClient(), f"Token {token}")

    assert samples["kpi_ledger_files"] == {
        (("status", "counted"),): 0,
        (("status", "failed"),): 0,
        (("status", "duplicate"),): 0,
        (("status", "too_late"),): 0,
    }
    assert samples["kpi_ledger_rows"] == {
        (("result", "accepted"),): 0,
        (("result", "rejected"),): 0,
    }
    assert samples["kpi_update_runs"] == {(("exit_status", "0"),): 0, (("exit_status", "1"),): 0}
    assert (
        not {
            "kpi_latest_interval_end_timestamp_seconds",
            "kpi_update_last_run_end_timestamp_seconds",
            "kpi_update_last_run_exit_status",
        }
        & samples.keys()
    )


@pytest.mark.django_db
def test_metrics_speak_openmetrics_to_a_scraper_that_asks_for_it(
    a_run_with_a_failed_file: RunResult, token: str
) -> None:
    response = APIClient().get(
        "/metrics",
        HTTP_AUTHORIZATION=f"Token {token}",
        HTTP_ACCEPT="application/openmetrics-text; version=1.0.0, text/plain; version=0.0.4; q=0.5",
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    families = {family.name: family for family in openmetrics_families(response.content.decode())}
    assert families["kpi_update_last_run_exit_status"].samples[0].value == 1
