"""ETag and 304, gzip and Vary on API responses; HTML pages left alone."""

from __future__ import annotations

import gzip

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from kpis.models import IntervalType, ServiceTrafficVolume
from kpis.tests.api.test_responses_unchanged import TOKEN, build_database

pytestmark = pytest.mark.django_db

API_PATHS = [
    "/api/KPIs/",
    "/api/KPIs/1/",
    "/api/KPIs/2/?interval=2",
    "/api/KPIs/1/?format=csv",
    "/api/KPIs/2/?limit=2&offset=2",
    "/api/intervals/",
    "/api/intervals/?format=csv",
]


@pytest.fixture
def client() -> APIClient:
    cache.clear()
    build_database()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {TOKEN}")
    return api


def vary(response: object) -> set[str]:
    return {item.strip().lower() for item in response["Vary"].split(",")}  # type: ignore[index]


class TestETag:
    @pytest.mark.parametrize("path", API_PATHS)
    def test_a_matching_if_none_match_gets_304_without_a_body(
        self, client: APIClient, path: str
    ) -> None:
        first = client.get(path)
        assert first.status_code == 200
        etag = first["ETag"]
        assert etag.startswith('"') and len(etag) > 10
        again = client.get(path, HTTP_IF_NONE_MATCH=etag)
        assert again.status_code == 304
        assert again.content == b""
        assert again["ETag"] == etag
        assert {"authorization", "cookie"} <= vary(again)

    @pytest.mark.parametrize("path", API_PATHS)
    def test_a_different_if_none_match_gets_the_full_body(
        self, client: APIClient, path: str
    ) -> None:
        first = client.get(path)
        other = client.get(path, HTTP_IF_NONE_MATCH='"0123456789abcdef", W/"fedcba9876543210"')
        assert other.status_code == 200
        assert other.content == first.content
        assert other["ETag"] == first["ETag"]

    def test_the_etag_follows_the_data(self, client: APIClient) -> None:
        before = client.get("/api/KPIs/1/?interval=2")
        ServiceTrafficVolume.objects.filter(interval=IntervalType.ONE_HOUR).update(total_bytes=5)
        after = client.get("/api/KPIs/1/?interval=2", HTTP_IF_NONE_MATCH=before["ETag"])
        assert after.status_code == 200
        assert after["ETag"] != before["ETag"]
        assert b'"total_bytes":5' in after.content

    def test_json_and_csv_of_the_same_rows_have_different_etags(self, client: APIClient) -> None:
        as_json = client.get("/api/KPIs/1/")
        as_csv = client.get("/api/KPIs/1/", HTTP_ACCEPT="text/csv")
        assert as_json["ETag"] != as_csv["ETag"]
        assert "accept" in vary(as_json)
        refused = client.get(
            "/api/KPIs/1/", HTTP_ACCEPT="text/csv", HTTP_IF_NONE_MATCH=as_json["ETag"]
        )
        assert refused.status_code == 200

    def test_an_error_is_never_a_304(self, client: APIClient) -> None:
        anonymous = APIClient()
        refused = anonymous.get("/api/KPIs/1/")
        assert refused.status_code == 401
        again = anonymous.get("/api/KPIs/1/", HTTP_IF_NONE_MATCH=refused.get("ETag", '"x"'))
        assert again.status_code == 401
        assert again.content == refused.content
        missing = client.get("/api/KPIs/9/")
        assert client.get("/api/KPIs/9/", HTTP_IF_NONE_MATCH=missing["ETag"]).status_code == 404

    def test_responses_are_private_and_revalidated(self, client: APIClient) -> None:
        cache_control = client.get("/api/KPIs/")["Cache-Control"]
        assert {item.strip() for item in cache_control.split(",")} == {"private", "no-cache"}


class TestGzip:
    @pytest.mark.parametrize("path", API_PATHS)
    def test_a_gzip_body_inflates_to_the_plain_body(self, client: APIClient, path: str) -> None:
        plain = client.get(path)
        zipped = client.get(path, HTTP_ACCEPT_ENCODING="gzip, deflate, br")
        assert "Content-Encoding" not in plain
        if len(plain.content) < 200:  # too short to be worth compressing
            assert zipped.content == plain.content
            return
        assert "accept-encoding" in vary(plain)
        assert zipped["Content-Encoding"] == "gzip"
        assert zipped["Content-Type"] == plain["Content-Type"]
        assert "accept-encoding" in vary(zipped)
        assert gzip.decompress(zipped.content) == plain.content
        assert len(zipped.content) < len(plain.content)

    def test_a_gzip_response_has_a_weak_etag_that_still_gets_304(self, client: APIClient) -> None:
        zipped = client.get("/api/intervals/", HTTP_ACCEPT_ENCODING="gzip")
        plain = client.get("/api/intervals/")
        assert zipped["ETag"] == f"W/{plain['ETag']}"
        again = client.get(
            "/api/intervals/", HTTP_ACCEPT_ENCODING="gzip", HTTP_IF_NONE_MATCH=zipped["ETag"]
        )
        assert again.status_code == 304

    def test_html_pages_are_never_compressed(self, client: APIClient) -> None:
        admin = User.objects.create_superuser("admin", password="not-a-real-password-2")
        Token.objects.create(user=admin)
        browser = Client()
        browser.force_login(admin)
        for path, accept in (
            ("/api/KPIs/1/", "text/html"),  # the browsable API carries a CSRF token
            ("/api/docs/", "text/html"),
            ("/", "text/html"),
            ("/admin/", "text/html"),
        ):
            page = browser.get(path, HTTP_ACCEPT=accept, HTTP_ACCEPT_ENCODING="gzip")
            assert page.status_code == 200, path
            assert page["Content-Type"].startswith("text/html"), path
            assert "Content-Encoding" not in page, path

    def test_pages_outside_the_api_get_no_etag(self, client: APIClient) -> None:
        admin = User.objects.create_superuser("admin", password="not-a-real-password-2")
        browser = Client()
        browser.force_login(admin)
        assert "ETag" not in browser.get("/")
