"""Throttling that also counts refused requests.

DRF checks authentication and permissions before throttles, so requests that
end in 401 (no credentials, a guessed token) would never be limited. This
mixin throttles them first.
"""

from __future__ import annotations

from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request


class ThrottleBeforeAuthMixin:
    """Check throttles before a request can be refused for its credentials."""

    def perform_authentication(self, request: Request) -> None:
        try:
            request.user  # noqa: B018 - authenticates the request
        except AuthenticationFailed:
            # A failed token counts as an anonymous request against the limit.
            self.check_throttles(request)
            raise

    def check_permissions(self, request: Request) -> None:
        self.check_throttles(request)
        super().check_permissions(request)  # type: ignore[misc]

    def check_throttles(self, request: Request) -> None:
        if getattr(request, "_throttles_checked", False):
            return
        request._throttles_checked = True  # type: ignore[attr-defined]
        super().check_throttles(request)  # type: ignore[misc]
