"""The API exactly as the seed shows it: shapes, ordering, filters, errors, auth, paging."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from kpis.models import CellUniqueUsers, IntervalLedger, IntervalType, ServiceTrafficVolume
from kpis.tests.conftest import interval_times, utc

pytestmark = pytest.mark.django_db

FIVE, HOUR = IntervalType.FIVE_MINUTES, IntervalType.ONE_HOUR


@pytest.fixture(autouse=True)
def _fresh_throttles() -> None:
    cache.clear()


@pytest.fixture
def user() -> User:
    return User.objects.create_user("analyst", password="not-a-real-password-1")


@pytest.fixture
def client(user: User) -> APIClient:
    api = APIClient()
    token = Token.objects.create(user=user)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api


def service_row(start: str, interval: int, service_id: int, total: int) -> ServiceTrafficVolume:
    return ServiceTrafficVolume.objects.create(
        **interval_times(start, interval), service_id=service_id, total_bytes=total
    )


def cell_row(start: str, interval: int, cell_id: int, users: int) -> CellUniqueUsers:
    return CellUniqueUsers.objects.create(
        **interval_times(start, interval), cell_id=cell_id, number_of_unique_users=users
    )


@pytest.fixture
def rows() -> dict[str, ServiceTrafficVolume]:
    return {
        "late_small": service_row("2021-07-18T00:05", FIVE, 3, 11500),
        "hour": service_row("2021-07-18T00:00", HOUR, 1, 2**40),
        "first_small": service_row("2021-07-18T00:00", FIVE, 3, 11500),
        "first_big": service_row("2021-07-18T00:00", FIVE, 1, 16100),
        "first_tie": service_row("2021-07-18T00:00", FIVE, 2, 11500),
        "before": service_row("2021-07-17T23:55", FIVE, 9, 1),
    }


def body(response: Any) -> Any:
    assert response["Content-Type"] == "application/json"
    return response.json()


class TestKpiList:
    def test_it_lists_the_two_kpis(self, client: APIClient) -> None:
        response = client.get("/api/KPIs/")
        assert response.status_code == 200
        assert body(response) == [
            {"id": 1, "name": "ServiceTrafficVolume"},
            {"id": 2, "name": "CellUniqueUsers"},
        ]


class TestKpiRows:
    def test_service_rows_have_the_seed_shape_and_order(
        self, client: APIClient, rows: dict[str, ServiceTrafficVolume]
    ) -> None:
        response = client.get(
            "/api/KPIs/1/?interval_start_timestamp__gte=2021-07-18T00%3A00%3A00Z"
            "&interval_end_timestamp__lte=&interval=1"
        )
        assert response.status_code == 200
        assert body(response) == [
            {
                "id": rows["first_big"].id,
                "interval_start_timestamp": "2021-07-18T00:00:00Z",
                "interval_end_timestamp": "2021-07-18T00:05:00Z",
                "interval": 1,
                "service_id": 1,
                "total_bytes": 16100,
            },
            {
                "id": rows["first_tie"].id,
                "interval_start_timestamp": "2021-07-18T00:00:00Z",
                "interval_end_timestamp": "2021-07-18T00:05:00Z",
                "interval": 1,
                "service_id": 2,
                "total_bytes": 11500,
            },
            {
                "id": rows["first_small"].id,
                "interval_start_timestamp": "2021-07-18T00:00:00Z",
                "interval_end_timestamp": "2021-07-18T00:05:00Z",
                "interval": 1,
                "service_id": 3,
                "total_bytes": 11500,
            },
            {
                "id": rows["late_small"].id,
                "interval_start_timestamp": "2021-07-18T00:05:00Z",
                "interval_end_timestamp": "2021-07-18T00:10:00Z",
                "interval": 1,
                "service_id": 3,
                "total_bytes": 11500,
            },
        ]

    def test_cell_rows_have_their_own_fields(self, client: APIClient) -> None:
        row = cell_row("2021-07-18T00:00", HOUR, 42, 7)
        assert body(client.get("/api/KPIs/2/")) == [
            {
                "id": row.id,
                "interval_start_timestamp": "2021-07-18T00:00:00Z",
                "interval_end_timestamp": "2021-07-18T01:00:00Z",
                "interval": 2,
                "cell_id": 42,
                "number_of_unique_users": 7,
            }
        ]

    def test_without_filters_all_rows_come_by_time_then_interval_type(
        self, client: APIClient, rows: dict[str, ServiceTrafficVolume]
    ) -> None:
        ids = [item["id"] for item in body(client.get("/api/KPIs/1/"))]
        order = ["before", "first_big", "first_tie", "first_small", "hour", "late_small"]
        assert ids == [rows[name].id for name in order]

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("interval=2", ["hour"]),
            ("interval=1&interval_start_timestamp__gte=2021-07-18T00:05:00Z", ["late_small"]),
            (
                "interval_end_timestamp__lte=2021-07-18T00:05:00Z",
                ["before", "first_big", "first_tie", "first_small"],
            ),
            ("interval_end_timestamp__lte=2021-07-18T00:00:00Z", ["before"]),
            (
                "interval_start_timestamp__gte=2021-07-18T01:00:00%2B01:00",
                ["first_big", "first_tie", "first_small", "hour", "late_small"],
            ),
            ("interval_start_timestamp__gte=2021-07-18T00:05:00", ["late_small"]),  # no offset: UTC
            (
                "interval_start_timestamp__gte=&interval_end_timestamp__lte=&interval=",
                ["before", "first_big", "first_tie", "first_small", "hour", "late_small"],
            ),
            ("interval=2&interval_end_timestamp__lte=2021-07-18T00:30:00Z", []),
        ],
    )
    def test_filters(
        self,
        client: APIClient,
        rows: dict[str, ServiceTrafficVolume],
        query: str,
        expected: list[str],
    ) -> None:
        ids = [item["id"] for item in body(client.get(f"/api/KPIs/1/?{query}"))]
        assert ids == [rows[name].id for name in expected]

    @pytest.mark.parametrize(
        ("query", "parameter"),
        [
            ("interval_start_timestamp__gte=yesterday", "interval_start_timestamp__gte"),
            ("interval_end_timestamp__lte=2021-13-01T00:00:00Z", "interval_end_timestamp__lte"),
            ("interval=3", "interval"),
            ("interval=five", "interval"),
            ("limit=-1", "limit"),
            ("limit=ten", "limit"),
            ("limit=5&offset=x", "offset"),
            # Valid ISO 8601, but out of the years 1 to 9999 once converted to UTC.
            (
                "interval_start_timestamp__gte=0001-01-01T00:00:00%2B01:00",
                "interval_start_timestamp__gte",
            ),
            (
                "interval_end_timestamp__lte=9999-12-31T23:59:59-01:00",
                "interval_end_timestamp__lte",
            ),
            ("interval_end_timestamp__lte=0001-01-01T00:00:00Z", "interval_end_timestamp__lte"),
            (
                "interval_start_timestamp__gte=2021-07-18T00:30:00Z%00",
                "interval_start_timestamp__gte",
            ),
            ("interval_end_timestamp__lte=2021-07-18T00:30:00Z%0A", "interval_end_timestamp__lte"),
            ("interval=1%00", "interval"),
            ("limit=%C2%B2", "limit"),
            ("limit=5%00", "limit"),
            ("limit=9223372036854775808", "limit"),
            ("offset=" + "9" * 5000, "offset"),
            ("format=xml", "format"),
            ("format=csv%00", "format"),
        ],
    )
    @pytest.mark.parametrize("path", ["/api/KPIs/1/", "/api/KPIs/2/", "/api/intervals/"])
    @pytest.mark.parametrize("accept", ["application/json", "text/csv"])
    def test_a_malformed_parameter_is_a_json_400_naming_it(
        self, client: APIClient, query: str, parameter: str, path: str, accept: str
    ) -> None:
        response = client.get(f"{path}?{query}", HTTP_ACCEPT=accept)
        assert response.status_code == 400
        errors = body(response)
        assert list(errors) == [parameter]
        assert errors[parameter][0]

    @pytest.mark.parametrize(
        "query",
        [
            "interval_start_timestamp__gte=0001-01-02T00:00:00%2B23:59",
            "interval_end_timestamp__lte=9999-12-30T23:59:59.999999-23:59",
            "interval_start_timestamp__gte=&interval_end_timestamp__lte=&interval=&limit=&offset=",
            "format=",
            "limit=9223372036854775807&offset=9223372036854775807",
        ],
    )
    def test_values_at_the_edges_and_empty_values_are_accepted(
        self, client: APIClient, query: str
    ) -> None:
        assert client.get(f"/api/KPIs/1/?{query}").status_code == 200

    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ("limit=0", "Must be a whole number of at least 1."),
            ("offset=-1", "Must be a whole number of at least 0."),
            ("limit=9223372036854775808", "Must be at most 9223372036854775807."),
            ("offset=" + "9" * 5000, "Must be at most 9223372036854775807."),
        ],
    )
    def test_paging_errors_say_what_is_allowed(
        self, client: APIClient, query: str, message: str
    ) -> None:
        response = client.get(f"/api/intervals/?{query}")
        assert response.status_code == 400
        assert list(body(response).values()) == [[message]]

    def test_an_unacceptable_accept_header_is_a_json_406(self, client: APIClient) -> None:
        response = client.get("/api/KPIs/1/", HTTP_ACCEPT="application/xml")
        assert response.status_code == 406
        assert body(response) == {"detail": "Could not satisfy the request Accept header."}

    @pytest.mark.parametrize("kpi_id", ["3", "0", "abc"])
    def test_an_unknown_kpi_is_a_json_404(self, client: APIClient, kpi_id: str) -> None:
        response = client.get(f"/api/KPIs/{kpi_id}/")
        assert response.status_code == 404
        assert body(response) == {
            "detail": f"No KPI with id '{kpi_id}'; GET /api/KPIs/ lists them."
        }


class TestPagination:
    def test_limit_and_offset_page_the_list(
        self, client: APIClient, rows: dict[str, ServiceTrafficVolume]
    ) -> None:
        response = body(client.get("/api/KPIs/1/?limit=2&offset=1"))
        assert response["count"] == 6
        assert [item["id"] for item in response["results"]] == [
            rows["first_big"].id,
            rows["first_tie"].id,
        ]
        assert response["next"].endswith("/api/KPIs/1/?limit=2&offset=3")
        assert response["previous"].endswith("/api/KPIs/1/?limit=2")

    def test_without_limit_the_body_is_the_plain_list(
        self, client: APIClient, rows: dict[str, ServiceTrafficVolume]
    ) -> None:
        assert isinstance(body(client.get("/api/KPIs/1/?limit=")), list)
        assert isinstance(body(client.get("/api/KPIs/1/?offset=2")), list)

    def test_a_json_page_carries_no_paging_headers(
        self, client: APIClient, rows: dict[str, ServiceTrafficVolume]
    ) -> None:
        response = client.get("/api/KPIs/1/?limit=2&offset=2")
        assert "X-Total-Count" not in response
        assert "Link" not in response


class TestAuthentication:
    def test_anonymous_requests_get_401(self) -> None:
        for path in ("/api/KPIs/", "/api/KPIs/1/", "/api/intervals/"):
            response = APIClient().get(path)
            assert response.status_code == 401
            assert response["WWW-Authenticate"] == "Token"
            assert "credentials were not provided" in body(response)["detail"]

    def test_a_wrong_token_gets_401(self) -> None:
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION="Token not-a-token")
        assert api.get("/api/KPIs/").status_code == 401

    @override_settings(KPI_API_PUBLIC=True)
    def test_a_public_api_needs_no_credentials(self) -> None:
        assert APIClient().get("/api/KPIs/1/").status_code == 200

    def test_a_session_works_and_the_browsable_api_renders_for_an_admin(self) -> None:
        User.objects.create_superuser("admin", password="not-a-real-password-2")
        api = APIClient()
        # Through the login form: the lockout backend needs the request.
        login = api.post(
            "/admin/login/", {"username": "admin", "password": "not-a-real-password-2"}
        )
        assert login.status_code == 302
        assert api.get("/api/KPIs/1/").status_code == 200
        page = api.get("/api/KPIs/1/", HTTP_ACCEPT="text/html")
        assert page.status_code == 200
        assert b"Kpi Rows" in page.content

    def test_the_api_is_read_only(self, client: APIClient) -> None:
        for method in ("post", "put", "patch", "delete"):
            assert getattr(client, method)("/api/KPIs/1/", {}).status_code == 405


class TestIntervalLedger:
    def test_it_lists_intervals_and_flags_incomplete_hours(self, client: APIClient) -> None:
        IntervalLedger.objects.create(
            interval=HOUR,
            interval_start_timestamp=utc("2021-07-18T00:00"),
            interval_end_timestamp=utc("2021-07-18T01:00"),
            revision=1,
            intervals_processed=11,
            files_counted=11,
            rows_accepted=5,
        )
        IntervalLedger.objects.create(
            interval=FIVE,
            interval_start_timestamp=utc("2021-07-18T00:00"),
            interval_end_timestamp=utc("2021-07-18T00:05"),
            revision=1,
            files_counted=1,
            files_failed=1,
            rejects={"missing_value": 2},
        )
        items = body(
            client.get("/api/intervals/?interval_start_timestamp__gte=2021-07-18T00:00:00Z")
        )
        assert [(item["interval"], item["complete"]) for item in items] == [(1, False), (2, False)]
        assert items[0]["rejects"] == {"missing_value": 2}
        assert body(client.get("/api/intervals/?interval=2"))[0]["intervals_processed"] == 11
