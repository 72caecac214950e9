"""?format=csv gives the same rows, columns and order as the JSON, with the same filters."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from kpis.models import IntervalLedger
from kpis.tests.conftest import InputFolder, RunResult

pytestmark = pytest.mark.django_db

NOW = "2021-07-18T02:00:00Z"


@pytest.fixture
def client(input_folder: InputFolder, run_update: Callable[..., RunResult]) -> APIClient:
    for index, start in enumerate(["2021-07-18T00:00", "2021-07-18T00:05", "2021-07-18T00:10"]):
        input_folder.write(
            start,
            [
                ("4917000001", "10", "1", "100", str(900 + index)),
                ("4917000002", "11", "2", "5", "5"),
                ("4917000003", "12", "3", "70", "7"),
                ("4917000004", "12", "4", "1", "x"),  # rejected: malformed bytes
            ],
        )
    run_update(NOW)
    api = APIClient()
    api.force_authenticate(get_user_model().objects.create_user("analyst"))
    return api


def csv_rows(response: Any) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(response.content.decode())))


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?interval=1",
        "?interval=2",
        "?interval_start_timestamp__gte=2021-07-18T00:05:00Z&interval_end_timestamp__lte=",
        "?interval_end_timestamp__lte=2021-07-18T00:10:00Z&limit=4&offset=1",
    ],
)
@pytest.mark.parametrize("kpi_id", [1, 2])
def test_kpi_rows_as_csv_match_the_json(client: APIClient, kpi_id: int, query: str) -> None:
    url = f"/api/KPIs/{kpi_id}/{query}"
    body = client.get(url).json()
    rows = body.get("results", body) if isinstance(body, dict) else body
    assert rows

    table = csv_rows(client.get(url + ("&" if "?" in url else "?") + "format=csv"))

    assert table[0] == list(rows[0])
    assert table[1:] == [[str(value) for value in row.values()] for row in rows]


def test_a_csv_page_gives_the_total_and_the_neighbour_pages_in_headers(
    client: APIClient,
) -> None:
    page = {"limit": 2, "offset": 2}
    json_page = client.get("/api/KPIs/1/", page).json()

    middle = client.get("/api/KPIs/1/", page, HTTP_ACCEPT="text/csv")
    first = client.get("/api/KPIs/1/", {"limit": 2}, HTTP_ACCEPT="text/csv")
    last = client.get("/api/KPIs/1/", {"limit": 2, "offset": 11}, HTTP_ACCEPT="text/csv")

    assert len(csv_rows(middle)) == 3
    assert middle["X-Total-Count"] == first["X-Total-Count"] == str(json_page["count"]) == "12"
    assert middle["Link"] == (
        f'<{json_page["next"]}>; rel="next", <{json_page["previous"]}>; rel="prev"'
    )
    assert first["Link"].endswith('offset=2>; rel="next"') and 'rel="prev"' not in first["Link"]
    assert last["Link"].endswith('offset=9>; rel="prev"') and 'rel="next"' not in last["Link"]
    assert "X-Total-Count" not in client.get("/api/KPIs/1/", HTTP_ACCEPT="text/csv")


def test_a_csv_page_asked_by_format_links_to_csv_pages(client: APIClient) -> None:
    response = client.get("/api/intervals/?format=csv&limit=1&offset=1")
    assert len(csv_rows(response)) == 2
    assert response["X-Total-Count"] == str(IntervalLedger.objects.count())
    for link in response["Link"].split(", "):
        assert "format=csv" in link


@pytest.mark.parametrize(("query", "accept"), [("", "text/csv"), ("?format=csv", "*/*")])
def test_the_kpi_list_as_csv(client: APIClient, query: str, accept: str) -> None:
    response = client.get(f"/api/KPIs/{query}", HTTP_ACCEPT=accept)
    assert csv_rows(response) == [
        ["id", "name"],
        ["1", "ServiceTrafficVolume"],
        ["2", "CellUniqueUsers"],
    ]


def test_the_ledger_as_csv_keeps_its_columns_and_spells_out_structured_values(
    client: APIClient,
) -> None:
    entries = client.get("/api/intervals/").json()

    table = csv_rows(client.get("/api/intervals/?format=csv"))

    header, lines = table[0], table[1:]
    assert header == list(entries[0])
    assert len(lines) == len(entries) == 4  # three intervals and their hour
    for entry, line in zip(entries, lines, strict=True):
        cells = dict(zip(header, line, strict=True))
        assert entry["rejects"]
        assert json.loads(cells["rejects"]) == entry["rejects"]
        assert cells["complete"] == str(entry["complete"]).lower()
        assert cells["processed_at"] == entry["processed_at"]
        assert cells["rows_accepted"] == str(entry["rows_accepted"])


def test_an_empty_result_is_a_header_only_csv(client: APIClient) -> None:
    table = csv_rows(client.get("/api/KPIs/2/?interval_start_timestamp__gte=2030-01-01&format=csv"))

    assert table == [
        [
            "id",
            "interval_start_timestamp",
            "interval_end_timestamp",
            "interval",
            "cell_id",
            "number_of_unique_users",
        ]
    ]


def test_errors_stay_json_when_csv_was_asked_for(client: APIClient) -> None:
    bad = client.get("/api/KPIs/1/?interval=9&format=csv")
    missing = client.get("/api/KPIs/7/?format=csv")
    anonymous = APIClient().get("/api/intervals/?format=csv")

    assert (bad.status_code, bad["Content-Type"]) == (400, "application/json")
    assert list(bad.json()) == ["interval"]
    assert (missing.status_code, missing["Content-Type"]) == (404, "application/json")
    assert "detail" in missing.json()
    assert anonymous.status_code == 401
    assert anonymous["Content-Type"] == "application/json"


@pytest.mark.django_db
def test_an_options_request_in_csv_is_one_row_not_an_error() -> None:
    api = APIClient()
    api.force_authenticate(get_user_model().objects.create_user("csv-options"))
    response = api.options("/api/KPIs/1/?format=csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response.content.decode().splitlines()[0].startswith("name,")
