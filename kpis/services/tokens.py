"""API tokens: issued and revoked by the api_token and create_demo_user commands."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.authtoken.models import Token


@dataclass(frozen=True)
class DemoCredentials:
    """The demo user's API token, and its password when this call set one (None: kept)."""

    username: str
    token: str
    password: str | None


def api_user_create(*, username: str) -> bool:
    """Make ``username`` a plain user for a machine client, unless it exists; True if made.

    Not staff, not superuser and with no usable password: it can read the API with its
    token and cannot log in to the admin or the dashboard.
    """
    user_model = get_user_model()
    with transaction.atomic():
        if user_model.objects.filter(username=username).exists():
            return False
        user = user_model(username=username, is_staff=False, is_superuser=False)
        user.set_unusable_password()
        user.save()
    return True


def api_token_create(*, username: str) -> str:
    """Give ``username`` a new API token, replacing any previous one; return its key."""
    user = get_user_model().objects.get(username=username)
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return str(Token.objects.create(user=user).key)


def api_token_revoke(*, username: str) -> bool:
    """Delete the API token of ``username``; return whether there was one."""
    deleted, _ = Token.objects.filter(user__username=username).delete()
    return deleted > 0


def demo_user_ensure(*, username: str, rotate: bool = False) -> DemoCredentials:
    """Make ``username`` a superuser with a password and an API token; keep both if it has them.

    A second ``make demo`` must not break the token a client was given by the first;
    ``rotate`` sets a new password and a new token (a password is only known when set).
    """
    user_model = get_user_model()
    with transaction.atomic():
        user, created = user_model.objects.select_for_update().get_or_create(username=username)
        password = None
        if created or rotate or not user.has_usable_password():
            password = secrets.token_urlsafe(12)
            user.set_password(password)
        user.is_staff = user.is_superuser = True
        user.save()
        if rotate:
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
    return DemoCredentials(username=username, token=str(token.key), password=password)
