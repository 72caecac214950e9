"""Security: deploy checks, authentication, tokens, throttling, read-only API, no secrets."""

from __future__ import annotations

import io
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from kpis.tests.conftest import database_url

BASE_DIR = Path(settings.BASE_DIR)
API_URLS = ["/api/KPIs/", "/api/KPIs/1/", "/api/KPIs/2/", "/api/intervals/"]

# The production settings docs/operations.md documents, behind a TLS-terminating proxy.
PRODUCTION_ENV = {
    "DJANGO_DEBUG": "false",
    "DJANGO_ALLOWED_HOSTS": "kpi.example.org",
    "DJANGO_BEHIND_HTTPS_PROXY": "true",
    "DJANGO_SECURE_SSL_REDIRECT": "true",
    "DJANGO_SECURE_COOKIES": "true",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "DJANGO_SECURE_HSTS_PRELOAD": "true",
}


def manage(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run manage.py in a clean environment: only what is given, plus secrets from it."""
    full_env = {
        "PATH": "/usr/bin:/bin",
        "KPI_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": database_url(),
        "CACHE_URL": "locmem://",  # one short process: its throttle counters need no table
        **env,
    }
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=BASE_DIR,
    )


def security_warnings(output: str) -> list[str]:
    return re.findall(r"\(security\.\w+\)", output)


def test_deploy_check_passes_with_the_documented_production_settings(tmp_path: Path) -> None:
    env = {
        **PRODUCTION_ENV,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "KPI_SUBSCRIBER_KEY": secrets.token_urlsafe(50),
    }
    result = manage("check", "--deploy", env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert security_warnings(result.stdout + result.stderr) == []


def test_deploy_check_complains_without_them(tmp_path: Path) -> None:
    env = {"DJANGO_DEBUG": "true", "DJANGO_SECRET_KEY": "django-insecure-" + "x" * 40}
    result = manage("check", "--deploy", env=env, tmp_path=tmp_path)
    found = security_warnings(result.stdout + result.stderr)
    for expected in ("W004", "W008", "W009", "W012", "W016", "W018"):
        assert f"(security.{expected})" in found


def test_a_short_secret_key_stops_start_up_with_a_message(tmp_path: Path) -> None:
    result = manage("check", env={"DJANGO_SECRET_KEY": "short"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "error: DJANGO_SECRET_KEY=<5 characters> is too short: use at least 32 characters, e.g. "
        "from python3 -c 'import secrets; print(secrets.token_urlsafe(50))'."
    ]


def test_hsts_is_sent_over_https_when_configured(tmp_path: Path) -> None:
    script = (
        "from django.test import Client;"
        "r = Client().get('/api/KPIs/', secure=True, HTTP_HOST='kpi.example.org');"
        "print(r.status_code, r.headers.get('Strict-Transport-Security'))"
    )
    env = {**PRODUCTION_ENV, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}
    result = manage("shell", "-v", "0", "-c", script, env=env, tmp_path=tmp_path)
    assert result.stdout.split(None, 1) == [
        "401",
        "max-age=31536000; includeSubDomains; preload\n",
    ], result.stderr


@pytest.mark.parametrize(("public", "expected"), [("false", 401), ("true", 200)])
def test_the_api_needs_a_login_unless_it_is_made_public(
    tmp_path: Path, public: str, expected: int
) -> None:
    script = (
        "from django.test import Client;"
        "print(Client().get('/api/KPIs/', HTTP_HOST='127.0.0.1').status_code)"
    )
    result = manage(
        "shell", "-v", "0", "-c", script, env={"KPI_API_PUBLIC": public}, tmp_path=tmp_path
    )
    assert result.stdout.strip() == str(expected), result.stderr


@pytest.mark.django_db
@pytest.mark.parametrize("url", API_URLS)
def test_anonymous_requests_get_401_with_a_message(url: str) -> None:
    response = APIClient().get(url)
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert response.headers["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
@pytest.mark.parametrize("url", API_URLS)
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_the_api_is_read_only(url: str, method: str) -> None:
    user = get_user_model().objects.create_superuser("root", password="x" * 20)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    response = getattr(client, method)(url, {"total_bytes": 1}, format="json")
    assert response.status_code == 405
    assert response.json() == {"detail": f'Method "{method.upper()}" not allowed.'}


def run_api_token(*args: str) -> str:
    out = io.StringIO()
    call_command("api_token", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_a_token_can_be_created_used_listed_and_revoked() -> None:
    get_user_model().objects.create_user("alice", password="x" * 20)
    key = run_api_token("create", "alice").strip()
    assert re.fullmatch(r"[0-9a-f]{40}", key)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/KPIs/").status_code == 200

    listing = run_api_token("list")
    assert listing.startswith("alice\tcreated ")
    assert key not in listing

    assert run_api_token("revoke", "alice").strip() == "token of alice revoked"
    response = client.get("/api/KPIs/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}
    assert run_api_token("list") == ""


@pytest.mark.django_db
def test_creating_a_token_again_replaces_the_old_one() -> None:
    get_user_model().objects.create_user("bob", password="x" * 20)
    first = run_api_token("create", "bob").strip()
    second = run_api_token("create", "bob").strip()
    assert first != second
    assert list(Token.objects.values_list("key", flat=True)) == [second]


@pytest.mark.django_db
def test_create_user_makes_a_plain_user_for_a_scraper_and_keeps_an_existing_one() -> None:
    key = run_api_token("create", "prometheus", "--create-user").strip()
    user = get_user_model().objects.get(username="prometheus")
    assert not user.is_staff and not user.is_superuser
    assert not user.has_usable_password()
    assert Token.objects.get(user=user).key == key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/metrics").status_code == 200

    get_user_model().objects.create_user("dave", password="x" * 20, is_staff=True)
    run_api_token("create", "dave", "--create-user")
    dave = get_user_model().objects.get(username="dave")
    assert dave.is_staff and dave.check_password("x" * 20)


@pytest.mark.django_db
def test_token_commands_name_the_problem() -> None:
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        run_api_token("create", "nobody")
    get_user_model().objects.create_user("carol", password="x" * 20)
    with pytest.raises(CommandError, match="user 'carol' has no token; nothing revoked"):
        run_api_token("revoke", "carol")


@pytest.mark.django_db
def test_a_scrape_user_is_made_plain_with_its_token() -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("api_token", "create", "prometheus", "--create-user", stdout=out, stderr=err)

    key = out.getvalue().strip()
    assert re.fullmatch(r"[0-9a-f]{40}", key)
    assert err.getvalue().strip() == "user prometheus created (not staff, no password)"
    user = get_user_model().objects.get(username="prometheus")
    assert (user.is_staff, user.is_superuser, user.is_active) == (False, False, True)
    assert not user.has_usable_password()
    client = APIClient()
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    login = client.post("/admin/login/", {"username": "prometheus", "password": ""})
    assert login.status_code == 200 and "_auth_user_id" not in client.session
    assert client.get("/admin/", follow=True).redirect_chain[-1][0].startswith("/admin/login/")
    # Again: the same user, a new token, nothing said about the user.
    again, quiet = io.StringIO(), io.StringIO()
    call_command("api_token", "create", "prometheus", "--create-user", stdout=again, stderr=quiet)
    assert again.getvalue().strip() != key
    assert quiet.getvalue() == ""
    assert get_user_model().objects.filter(username="prometheus").count() == 1


@pytest.mark.django_db
def test_a_token_for_a_missing_user_says_how_to_make_one() -> None:
    with pytest.raises(CommandError, match="add --create-user to make a plain one for it"):
        run_api_token("create", "prometheus")
    assert not get_user_model().objects.filter(username="prometheus").exists()


@pytest.fixture
def low_throttle_rates(monkeypatch: pytest.MonkeyPatch):
    rates = {"anon": "3/minute", "user": "5/minute"}
    rest_framework = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    # DRF copies the rates onto the throttle class when it is imported.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    cache.clear()
    with override_settings(REST_FRAMEWORK=rest_framework):
        yield rates
    cache.clear()


@pytest.mark.django_db
@pytest.mark.usefixtures("low_throttle_rates")
def test_anonymous_requests_are_throttled() -> None:
    client = APIClient()
    statuses = [client.get("/api/KPIs/").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert "Request was throttled" in client.get("/api/KPIs/").json()["detail"]


@pytest.mark.django_db
@pytest.mark.usefixtures("low_throttle_rates")
def test_guessing_tokens_is_throttled() -> None:
    client = APIClient()
    statuses = []
    for _ in range(4):
        client.credentials(HTTP_AUTHORIZATION=f"Token {secrets.token_hex(20)}")
        statuses.append(client.get("/api/intervals/").status_code)
    assert statuses == [401, 401, 401, 429]


@pytest.mark.django_db
@pytest.mark.usefixtures("low_throttle_rates")
def test_authenticated_requests_are_throttled_per_user() -> None:
    user = get_user_model().objects.create_user("dave", password="x" * 20)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    statuses = [client.get("/api/KPIs/").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    assert int(client.get("/api/KPIs/").headers["Retry-After"]) > 0


def test_env_example_documents_every_variable_settings_read() -> None:
    sources = (BASE_DIR / "network_analysis" / "settings.py").read_text()
    readers = r"\benv(?:str|bool|int|list|choice|address|rate|_secret)\(\s*\"([A-Z0-9_]+)\""
    read = set(re.findall(readers, sources))
    documented = set(
        re.findall(r"^([A-Z0-9_]+)=", (BASE_DIR / ".env.example").read_text(), re.MULTILINE)
    )
    assert read, "no environment variable found in settings.py"
    assert read - documented == set()
    assert documented - read == set()


def test_no_secret_is_tracked_by_git() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=BASE_DIR, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [
        name
        for name in tracked
        if name == ".env"
        or name.endswith(("secret_key", "subscriber_key", ".pem", ".key"))
        or name.startswith("data/")
    ]
    env_example = (BASE_DIR / ".env.example").read_text()
    assert re.findall(r"^(?:DJANGO_SECRET_KEY|KPI_SUBSCRIBER_KEY)=(.*)$", env_example, re.M) == [
        "",
        "",
    ]
