"""The client's address, the same for the admin's login lockout and the API's throttles."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The address of the client that sent ``request``.

    Behind the HTTPS proxy (``DJANGO_BEHIND_HTTPS_PROXY``) every connection comes from
    the proxy, so the client is the right-most ``X-Forwarded-For`` entry: the one the
    proxy appended. Entries to its left come from the client and may be forged. Without
    the proxy the header is ignored and the connection's address is the client.
    """
    if settings.SECURE_PROXY_SSL_HEADER is not None:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        entries = [entry.strip() for entry in forwarded.split(",") if entry.strip()]
        if entries:
            return entries[-1]
    return request.META.get("REMOTE_ADDR")
