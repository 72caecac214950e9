"""Token checks remembered per process: for how long, and what forgets them at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token, TokenProxy
from rest_framework.test import APIClient

from kpis.api import authentication
from kpis.api.authentication import CachedTokenAuthentication, forget_checked_tokens

pytestmark = pytest.mark.django_db

TABLE = connection.ops.quote_name(Token._meta.db_table)
KEY = connection.ops.quote_name("key")  # a reserved word in MySQL


class Clock:
    """Stands in for kpis.api.authentication's ``monotonic``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(authentication, "monotonic", clock)
    return clock


@pytest.fixture
def token() -> Token:
    user = get_user_model().objects.create_user("dana", password="x" * 20)
    return Token.objects.create(user=user)


def get_kpis(key: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return int(client.get("/api/KPIs/").status_code)


def delete_behind_the_orm_s_back(token: Token) -> None:
    """What another process's revocation looks like here: the row is gone, no signal came."""
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE {KEY} = %s", [token.key])


def test_a_token_revoked_elsewhere_is_refused_once_the_cache_time_is_over(
    clock: Clock, token: Token, settings: Any
) -> None:
    assert get_kpis(token.key) == 200
    delete_behind_the_orm_s_back(token)
    clock.now += settings.KPI_API_TOKEN_CACHE_SECONDS - 0.1
    assert get_kpis(token.key) == 200  # the documented delay
    clock.now += 0.1
    assert get_kpis(token.key) == 401


def test_without_a_cache_time_every_request_checks_the_token(
    clock: Clock, token: Token, settings: Any
) -> None:
    settings.KPI_API_TOKEN_CACHE_SECONDS = 0
    assert get_kpis(token.key) == 200
    delete_behind_the_orm_s_back(token)
    assert get_kpis(token.key) == 401


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda token: token.delete(), id="token deleted"),
        pytest.param(
            lambda token: get_user_model().objects.filter(pk=token.user_id).delete(),
            id="user deleted",
        ),
    ],
)
def test_a_change_made_in_this_process_is_seen_at_once(
    clock: Clock, token: Token, change: Callable[[Token], object]
) -> None:
    assert get_kpis(token.key) == 200
    change(token)
    assert get_kpis(token.key) == 401


def test_a_user_deactivated_in_this_process_is_refused_at_once(clock: Clock, token: Token) -> None:
    assert get_kpis(token.key) == 200
    token.user.is_active = False
    token.user.save()
    assert get_kpis(token.key) == 401


def test_a_failed_check_is_not_remembered(clock: Clock) -> None:
    key = "f" * 40
    assert get_kpis(key) == 401
    user = get_user_model().objects.create_user("erin", password="x" * 20)
    # Created behind the ORM's back, so no signal forgets anything: only a fresh check sees it.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} ({KEY}, user_id, created) VALUES (%s, %s, %s)",
            [key, user.pk, "2026-01-01 00:00:00"],
        )
    assert get_kpis(key) == 200


def test_each_request_gets_its_own_user_and_token(clock: Clock, token: Token) -> None:
    check = CachedTokenAuthentication()
    first_user, first_token = check.authenticate_credentials(token.key)
    second_user, second_token = check.authenticate_credentials(token.key)
    assert first_user == second_user == token.user
    assert first_user is not second_user and first_token is not second_token
    assert second_token.user is second_user
    first_user.is_active = False  # what one request does to its user
    assert second_user.is_active


def test_a_token_changed_in_the_admin_is_seen_at_once(clock: Clock, token: Token) -> None:
    inactive = get_user_model().objects.create_user("gone", password="x" * 20, is_active=False)
    assert get_kpis(token.key) == 200
    # The admin edits tokens through DRF's TokenProxy, whose save signal names that class.
    proxy = TokenProxy.objects.get(pk=token.pk)
    proxy.user = inactive
    proxy.save()
    assert get_kpis(token.key) == 401


def test_a_check_under_way_while_a_token_is_revoked_is_not_remembered(
    clock: Clock, token: Token, monkeypatch: pytest.MonkeyPatch
) -> None:
    drf_check = TokenAuthentication.authenticate_credentials

    def check_while_another_thread_revokes(self: TokenAuthentication, key: str) -> Any:
        answer = drf_check(self, key)  # read before the revocation
        delete_behind_the_orm_s_back(token)
        forget_checked_tokens()  # what the revoking thread's signal does
        return answer

    with monkeypatch.context() as patch:
        patch.setattr(
            TokenAuthentication, "authenticate_credentials", check_while_another_thread_revokes
        )
        assert get_kpis(token.key) == 200  # checked before the change
    assert get_kpis(token.key) == 401  # but not remembered


PROTECTED_PATHS = [
    "/api/KPIs/",
    "/api/KPIs/1/",
    "/api/KPIs/2/?interval=2",
    "/api/intervals/",
    "/metrics",
]


@pytest.mark.parametrize("path", [*PROTECTED_PATHS, "/api/schema/"])
@pytest.mark.parametrize("scheme", ["Token", "Bearer", "bearer"])
def test_every_endpoint_accepts_the_token_as_token_or_bearer(
    clock: Clock, token: Token, path: str, scheme: str
) -> None:
    response = APIClient().get(path, HTTP_AUTHORIZATION=f"{scheme} {token.key}")
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("path", PROTECTED_PATHS)
def test_every_endpoint_refuses_a_wrong_or_missing_token_alike(clock: Clock, path: str) -> None:
    answers = [
        APIClient().get(path, headers=headers)
        for headers in (
            {},
            {"Authorization": "Token not-a-real-token"},
            {"Authorization": "Bearer not-a-real-token"},
        )
    ]
    assert [response.status_code for response in answers] == [401, 401, 401]
    assert [response.json()["detail"] for response in answers] == [
        "Authentication credentials were not provided.",
        "Invalid token.",
        "Invalid token.",
    ]
    assert {response["WWW-Authenticate"] for response in answers} == {"Token"}
