"""Token authentication: DRF's check, remembered for a few seconds per process.

DRF looks the token and its user up on every request. Building that ORM query
costs about 0.4 ms, more than a quarter of reading a day of KPI rows on SQLite;
a client that polls or pages sends the same token again and again. So a
successful check is remembered for ``KPI_API_TOKEN_CACHE_SECONDS`` (0 turns
this off). The trade-off: a token revoked, or a user deactivated, by another
process (``manage.py api_token revoke``, another gunicorn worker) is still
accepted by a worker for at most that long. The process that makes the change
forgets every remembered check at once (see :func:`forget_checked_tokens`), and
a check that was under way meanwhile (in another thread) is not remembered.
A failed check is never remembered.

What it buys (``bench/bespoke.py``): a remembered check takes 0.013 ms against
DRF's 0.30 ms, measured alone; on the whole one-day request (SQLite) DRF's check
adds 0.5 to 0.7 ms of CPU, 6 to 13 % of the request (0.45 ms, about a tenth of a
4.7 ms request on a quiet machine, with ``bench/api_speed.py``).
"""

from __future__ import annotations

import copy
from time import monotonic
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

# Successful checks by token key: (when the entry expires on the monotonic clock, user, token).
_CHECKED: dict[str, tuple[float, AbstractBaseUser, Token]] = {}
# More distinct tokens than this within one expiry time are not expected; past it the
# entries are dropped rather than let the dict grow.
_MAX_CHECKED = 1000


# How many times every check was forgotten: a check that saw this change while it ran
# may have read the row from before the change, and is not remembered.
_forgotten = 0


def forget_checked_tokens(*, using: str | None = None, **kwargs: Any) -> None:
    """Drop every remembered check (connected to saves and deletes of tokens and users).

    Again once the change is committed: until then another thread still reads the
    old row, and may remember it.
    """
    _forget()
    if using is not None:
        transaction.on_commit(_forget, using=using)


def _forget() -> None:
    global _forgotten
    _forgotten += 1
    _CHECKED.clear()


class CachedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, DRF's check remembered per process (see the module)."""

    def authenticate_credentials(self, key: str) -> tuple[AbstractBaseUser, Token]:
        seconds = settings.KPI_API_TOKEN_CACHE_SECONDS
        if seconds == 0:
            return super().authenticate_credentials(key)
        now = monotonic()
        checked = _CHECKED.get(key)
        if checked is None or checked[0] <= now:
            forgotten = _forgotten
            user, token = super().authenticate_credentials(key)  # raises for a bad token
            checked = (now + seconds, user, token)
            if forgotten == _forgotten:  # no token or user changed while it ran
                if len(_CHECKED) >= _MAX_CHECKED:
                    _CHECKED.clear()
                _CHECKED[key] = checked
        # Copies: what one request does to its user or token must not reach the next.
        user, token = copy.copy(checked[1]), copy.copy(checked[2])
        token.user = user
        return user, token


class BearerTokenAuthentication(CachedTokenAuthentication):
    """``Authorization: Bearer <key>``, what Prometheus and most monitors send by default."""

    keyword = "Bearer"
