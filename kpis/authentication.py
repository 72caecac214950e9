"""Token authentication under the ``Bearer`` keyword as well as DRF's ``Token``."""

from __future__ import annotations

from rest_framework.authentication import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    """``Authorization: Bearer <key>``, what Prometheus and most monitors send by default."""

    keyword = "Bearer"
