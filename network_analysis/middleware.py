"""HTTP for every page: HEAD answers carry the headers of a GET and no body."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse


class HeadWithoutBodyMiddleware:
    """Drop the body of every answer to ``HEAD``; the headers stay those of a ``GET``.

    Django's views answer HEAD like GET and leave the body for the server to drop.
    gunicorn drops it too, with a warning per response (``WSGI app sent body bytes on
    a no-body response``), so a monitor polling with HEAD would fill the log. Outermost
    in MIDDLEWARE, so the ETag, Content-Length and gzip headers are those of the GET.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if request.method != "HEAD":
            return response
        if isinstance(response, StreamingHttpResponse):
            # A file response: its file is closed with the response, its bytes never read.
            response.streaming_content = []
        elif response.streaming:
            return response
        else:
            response.content = b""  # type: ignore[attr-defined]
        return response
