"""Token authentication: DRF's check, remembered for a few seconds per process.

DRF looks the token and its user up on every request. Building that ORM query
costs about 0.4 ms, more than a quarter of reading a day of KPI rows on SQLite;
a client that polls or pages sends the same token again and again. So a
successful check is remembered for ``KPI_API_TOKEN_CACHE_SECONDS`` (0 turns
this off). The trade-off: a token revoked, or a user deactivated, by another
process (``manage.py api_token revoke``, another gunicorn worker) is still
accepted by a worker for at most that long. The process that makes the change
forgets every remembered check at once (see :func:`forget_checked_tokens`).
A failed check is never remembered.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

# Successful checks by token key: (when the entry expires on the monotonic clock, user, token).
_CHECKED: dict[str, tuple[float, AbstractBaseUser, Token]] = {}
# More distinct tokens than this within one expiry time are not expected; past it the
# entries are dropped rather than let the dict grow.
_MAX_CHECKED = 1000


def forget_checked_tokens(**kwargs: Any) -> None:
    """Drop every remembered check (connected to changes of tokens and users)."""
    _CHECKED.clear()


class CachedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, DRF's check remembered per process (see the module)."""

    def authenticate_credentials(self, key: str) -> tuple[AbstractBaseUser, Token]:
        seconds = settings.KPI_API_TOKEN_CACHE_SECONDS
        if seconds == 0:
            return super().authenticate_credentials(key)
        now = time.monotonic()
        checked = _CHECKED.get(key)
        if checked is None or checked[0] <= now:
            user, token = super().authenticate_credentials(key)  # raises for a bad token
            if len(_CHECKED) >= _MAX_CHECKED:
                _CHECKED.clear()
            checked = _CHECKED[key] = (now + seconds, user, token)
        # Copies: what one request does to its user or token must not reach the next.
        user, token = copy.copy(checked[1]), copy.copy(checked[2])
        token.user = user
        return user, token


class BearerTokenAuthentication(CachedTokenAuthentication):
    """``Authorization: Bearer <key>``, what Prometheus and most monitors send by default."""

    keyword = "Bearer"
