from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig
from django.core.management import call_command
from django.db.models.signals import post_delete, post_migrate, post_save


def _create_cache_table(*, using: str, verbosity: int = 1, **kwargs: Any) -> None:
    # The throttle counters' table is not a model: every ``migrate`` (demo, deployments,
    # test databases) creates it when the database cache is configured and it is missing.
    call_command("createcachetable", database=using, verbosity=max(0, verbosity - 1))


security_log = logging.getLogger("kpis.security")


def _log_lockout(*, username: str | None, ip_address: str | None, **kwargs: Any) -> None:
    # One line per refused login of a locked-out user or address, for the operator's
    # log watcher; the admin's "Access attempts" page lists them and unlocks.
    security_log.warning(
        "login locked out: user=%s address=%s (unlock: admin > Axes > Access attempts)",
        username or "-",
        ip_address or "-",
    )


class KpisConfig(AppConfig):
    name = "kpis"
    verbose_name = "Network KPIs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes.signals import user_locked_out
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token, TokenProxy

        from kpis.api.authentication import forget_checked_tokens

        post_migrate.connect(_create_cache_table, sender=self)
        user_locked_out.connect(_log_lockout, dispatch_uid="kpis-lockout-log")
        # A token revoked or a user changed in this process is refused here at once. The
        # admin edits tokens through DRF's TokenProxy, whose signals name that class.
        for model in (Token, TokenProxy, get_user_model()):
            post_save.connect(forget_checked_tokens, sender=model, dispatch_uid=f"tokens-{model}")
            post_delete.connect(
                forget_checked_tokens, sender=model, dispatch_uid=f"tokens-del-{model}"
            )
