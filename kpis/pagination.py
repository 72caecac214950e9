"""Pagination that stays out of the way: a plain list unless ``limit`` is given."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request


def _whole_number(request: Request, name: str, *, minimum: int) -> int | None:
    raw = request.query_params.get(name, "").strip()
    if raw == "":
        return None
    if not raw.isdigit() or int(raw) < minimum:
        raise ValidationError({name: [f"Must be a whole number of at least {minimum}."]})
    return int(raw)


class OptionalLimitOffsetPagination(LimitOffsetPagination):
    """``?limit=&offset=`` pages the list; without ``limit`` the body is the plain list."""

    max_limit = 10_000

    def get_limit(self, request: Request) -> int | None:
        limit = _whole_number(request, self.limit_query_param, minimum=1)
        return None if limit is None else min(limit, self.max_limit)

    def get_offset(self, request: Request) -> int:
        return _whole_number(request, self.offset_query_param, minimum=0) or 0

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        self.get_offset(request)  # a malformed offset is an error even without a limit
        return super().paginate_queryset(queryset, request, view)
