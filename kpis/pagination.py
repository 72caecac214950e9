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

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """For the schema: the plain list, or the page envelope when ``limit`` is given."""
        envelope = super().get_paginated_response_schema(schema)
        envelope["required"] = ["count", "next", "previous", "results"]
        for link in ("next", "previous"):
            envelope["properties"][link].pop("example", None)
        return {"oneOf": [schema, envelope]}

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        """For the schema: ``limit`` and ``offset`` with the bounds enforced above."""
        parameters = super().get_schema_operation_parameters(view)
        minimum = {self.limit_query_param: 1, self.offset_query_param: 0}
        for parameter in parameters:
            parameter["schema"]["minimum"] = minimum[parameter["name"]]
            if parameter["name"] == self.limit_query_param:
                parameter["description"] += f" Values above {self.max_limit} are capped."
        return parameters
