"""The login form under attack: django-axes locks out a user name and an address apart."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "the-right-password-7"
ATTACKER = "198.51.100.23"
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def admin_account() -> str:
    get_user_model().objects.create_superuser("admin", "admin@example.org", PASSWORD)
    return "admin"


def log_in(client: Client, username: str, password: str, **meta: Any) -> int:
    """The status of one login attempt: 302 logged in, 200 refused, 429 locked out."""
    return client.post(LOGIN, {"username": username, "password": password}, **meta).status_code


def test_sixty_wrong_passwords_lock_the_user_out_until_an_admin_unlocks(
    admin_account: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    attacker = Client(REMOTE_ADDR=ATTACKER)
    with caplog.at_level(logging.WARNING, logger="kpis.security"):
        statuses = [log_in(attacker, admin_account, f"guess-{n}") for n in range(60)]

    limit = settings.AXES_FAILURE_LIMIT
    assert statuses == [200] * (limit - 1) + [429] * (60 - limit + 1)
    # The right password, from the attacker's address or any other, is refused too.
    assert log_in(attacker, admin_account, PASSWORD) == 429
    assert log_in(Client(REMOTE_ADDR="192.0.2.50"), admin_account, PASSWORD) == 429
    lockouts = [r.getMessage() for r in caplog.records if r.name == "kpis.security"]
    assert lockouts and lockouts[0] == (
        f"login locked out: user=admin address={ATTACKER} (unlock: admin > Axes > Access attempts)"
    )

    # Another admin, from elsewhere, deletes the access attempts in the admin.
    get_user_model().objects.create_superuser("second", "second@example.org", PASSWORD)
    other = Client(REMOTE_ADDR="192.0.2.60")
    assert log_in(other, "second", PASSWORD) == 302
    page = other.get("/admin/axes/accessattempt/")
    assert page.status_code == 200 and ATTACKER in page.content.decode()
    attempts = [str(pk) for pk in AccessAttempt.objects.values_list("pk", flat=True)]
    unlocked = other.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": attempts, "post": "yes"},
    )
    assert unlocked.status_code == 302
    assert not AccessAttempt.objects.exists()

    assert log_in(Client(REMOTE_ADDR="192.0.2.50"), admin_account, PASSWORD) == 302


def test_a_lockout_ends_after_the_cool_off(admin_account: str, settings: Any) -> None:
    attacker = Client(REMOTE_ADDR=ATTACKER)
    for n in range(settings.AXES_FAILURE_LIMIT):
        log_in(attacker, admin_account, f"guess-{n}")
    assert log_in(attacker, admin_account, PASSWORD) == 429

    # The cool-off counts from the last refused attempt.
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time
        - settings.AXES_COOLOFF_TIME
        - timedelta(seconds=1)
    )

    assert log_in(attacker, admin_account, PASSWORD) == 302


def test_one_address_trying_many_users_is_locked_out_for_all_of_them(
    admin_account: str, settings: Any
) -> None:
    attacker = Client(REMOTE_ADDR=ATTACKER)
    statuses = [
        log_in(attacker, f"user-{n}", "wrong") for n in range(settings.AXES_FAILURE_LIMIT + 1)
    ]

    assert statuses[-2:] == [429, 429]
    assert log_in(attacker, admin_account, PASSWORD) == 429
    # The user itself is not locked: its owner logs in from another address.
    assert log_in(Client(REMOTE_ADDR="192.0.2.50"), admin_account, PASSWORD) == 302


def test_behind_the_https_proxy_the_address_is_the_one_the_proxy_appended(
    admin_account: str, settings: Any
) -> None:
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxy = Client(REMOTE_ADDR="127.0.0.1")
    # The attacker forges a new left part every time; the proxy appends the real address.
    for n in range(settings.AXES_FAILURE_LIMIT):
        log_in(
            proxy,
            f"user-{n}",
            "wrong",
            HTTP_X_FORWARDED_FOR=f"10.9.{n}.1, {ATTACKER}",
            HTTP_X_FORWARDED_PROTO="https",
        )

    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {ATTACKER}
    assert (
        log_in(
            proxy,
            admin_account,
            PASSWORD,
            HTTP_X_FORWARDED_FOR=ATTACKER,
            HTTP_X_FORWARDED_PROTO="https",
        )
        == 429
    )
    # Someone else behind the same proxy is not locked out.
    assert (
        log_in(
            proxy,
            admin_account,
            PASSWORD,
            HTTP_X_FORWARDED_FOR="192.0.2.50",
            HTTP_X_FORWARDED_PROTO="https",
        )
        == 302
    )
