"""HTTP for API clients: ETag and 304, gzip, and the right Vary, on API paths only.

Django's own middlewares do the work; these subclasses limit them to the API
(``/api/`` and ``/metrics``), so that HTML pages, whose bodies carry CSRF tokens,
are never compressed (BREACH) and the admin keeps its own caching rules.
"""

from __future__ import annotations

import hashlib

from django.http import HttpRequest, HttpResponseBase
from django.middleware.gzip import GZipMiddleware
from django.middleware.http import ConditionalGetMiddleware
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.http import quote_etag

API_PATH_PREFIXES = ("/api/", "/metrics")


def body_etag(content: bytes) -> str:
    """The strong ETag of a response body.

    Django's own is an MD5 of the body; SHA-256, which CPUs with SHA extensions (most
    current x86 and ARM) run in hardware, is about three times faster here (0.1 ms
    against 0.3 ms for a day of KPI rows, 155 kB). Any digest of the body will do.
    """
    return quote_etag(hashlib.sha256(content).hexdigest()[:32])


def is_api_request(request: HttpRequest) -> bool:
    """True for the API's paths, whatever the script name the site is mounted under."""
    return request.path_info.startswith(API_PATH_PREFIXES)


class ApiConditionalGetMiddleware(ConditionalGetMiddleware):
    """An ETag from the body of every API GET, and 304 for a matching ``If-None-Match``.

    Responses depend on the credentials (200 or 401), so they vary on
    ``Authorization`` and ``Cookie`` and are private to the client, which is told
    to revalidate (``no-cache``): a repeated poll then costs a 304 without a body.
    """

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if not is_api_request(request):
            return response
        patch_vary_headers(response, ("Authorization", "Cookie"))
        if not response.has_header("Cache-Control"):
            patch_cache_control(response, private=True, no_cache=True)
        content = None if response.streaming else getattr(response, "content", None)
        if (
            # HEAD too: its headers are those of the GET (the body goes at the outermost).
            request.method in ("GET", "HEAD")
            and content
            and self.needs_etag(response)
            and not response.has_header("ETag")
        ):
            response.headers["ETag"] = body_etag(content)
        return super().process_response(request, response)


class ApiGZipMiddleware(GZipMiddleware):
    """gzip for API bodies when the client accepts it; never for HTML (the browsable API)."""

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if not is_api_request(request) or response.get("Content-Type", "").startswith("text/html"):
            return response
        return super().process_response(request, response)
