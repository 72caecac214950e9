"""The API under fuzzing: schemathesis drives it from its own OpenAPI schema.

Valid and invalid requests (both generation modes) for every operation in
``/api/schema/``, with a token and against a database holding real rows:
no request may give a 5xx, and every 4xx must say what was wrong. The same
schema is then run by schemathesis' command line against a live gunicorn,
with every check and every phase.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.test import override_settings
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

from kpis.models import CellUniqueUsers, IntervalLedger, IntervalType, ServiceTrafficVolume
from kpis.tests.conftest import LiveApi, utc
from network_analysis.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


def a_4xx_says_why(ctx: Any, response: Any, case: Any) -> bool | None:
    """A refused request carries a JSON body that names the problem."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and body, f"{response.status_code} without a message"
        messages = [str(value) for value in body.values()]
        assert all(message.strip() for message in messages), body
    return None


@pytest.fixture
def api_token(db: None, wsgi_keeps_the_test_connection: None) -> Iterator[str]:
    start = utc("2026-01-05T00:00")
    for minutes in range(0, 60, 5):
        moment = start.replace(minute=minutes)
        end = moment.replace(minute=minutes) + (utc("2026-01-05T00:05") - start)
        ServiceTrafficVolume.objects.create(
            interval_start_timestamp=moment,
            interval_end_timestamp=end,
            interval=IntervalType.FIVE_MINUTES,
            service_id=minutes,
            total_bytes=2**40 + minutes,
        )
        CellUniqueUsers.objects.create(
            interval_start_timestamp=moment,
            interval_end_timestamp=end,
            interval=IntervalType.FIVE_MINUTES,
            cell_id=minutes,
            number_of_unique_users=minutes + 1,
        )
        IntervalLedger.objects.create(
            interval_start_timestamp=moment,
            interval_end_timestamp=end,
            interval=IntervalType.FIVE_MINUTES,
            revision=1,
            files_counted=1,
            rows_accepted=2,
        )
    user = get_user_model().objects.create_user("fuzzer", password="x" * 20)
    # /api/health/ stays 200 over these rows of the past: its 503 is designed, not a crash.
    with override_settings(KPI_HEALTH_MAX_LAG_SECONDS=10**10):
        yield Token.objects.create(user=user).key


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_request_breaks_the_api(case: Any, api_token: str) -> None:
    case.call_and_validate(
        # In process nothing undoes gzip, and the checks read the JSON bodies.
        headers={"Authorization": f"Token {api_token}", "Accept-Encoding": "identity"},
        checks=[not_a_server_error, a_4xx_says_why],
    )


def test_the_schema_covers_the_api() -> None:
    paths = {result.ok().path for result in schema.get_all_operations()}  # type: ignore[union-attr]
    assert {"/api/KPIs/", "/api/intervals/", "/api/health/"} <= paths


# A fixed seed and a bounded number of cases per operation and phase: the same run every
# time, a couple of minutes on a small machine.
SCHEMATHESIS_RUN = [
    "--checks=all",
    "--phases=examples,coverage,fuzzing,stateful",
    "--mode=all",
    "--seed=20210718",
    "--max-examples=25",
    "--workers=1",
    "--generation-database=none",
    "--no-color",
]


@pytest.mark.slow
def test_schemathesis_finds_nothing_against_a_live_server(
    live_api: LiveApi, tmp_path: Path
) -> None:
    schemathesis_cli = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            *(str(schemathesis_cli), "run", f"{live_api.url}/api/schema/?format=json"),
            *(*SCHEMATHESIS_RUN, "--header", f"Authorization: Token {live_api.token}"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in output, output
    assert "No issues found" in output, output
    # An OpenAPI link that cannot take its values from a response is reported apart from
    # the failures, and does not change the exit code.
    assert "Failed to extract data from response" not in output, output
    assert "Could not resolve" not in output, output
