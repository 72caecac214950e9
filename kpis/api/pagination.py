"""Pagination that stays out of the way: a plain list unless ``limit`` is given.

DRF's ``LimitOffsetPagination`` with what it lacks, not a speed measure: a
malformed or out-of-range ``limit`` or ``offset`` is a 400 naming the parameter
(DRF silently uses the default), ``offset`` is checked even without ``limit``, a
CSV page carries ``X-Total-Count`` and ``Link``, and the schema shows both bodies.
The saved responses pin it (``kpis/tests/api/test_responses_unchanged.py``:
``error_bad_offset``, ``error_limit_zero``, ``kpi1_limit_capped``, ``kpi1_csv_paged``).
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

# The largest value of a 64-bit signed integer: every database can take it as an offset.
LARGEST_NUMBER = 2**63 - 1
_DIGITS = re.compile(r"[0-9]+")


def _whole_number(request: Request, name: str, *, minimum: int) -> int | None:
    raw = request.query_params.get(name, "").strip(" ")
    if raw == "":
        return None
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not _DIGITS.fullmatch(raw):
        raise ValidationError({name: [f"Must be a whole number of at least {minimum}."]})
    # Compared as text first: int() refuses numbers of more than 4300 digits.
    digits = raw.lstrip("0") or "0"
    if len(digits) > len(str(LARGEST_NUMBER)) or int(digits) > LARGEST_NUMBER:
        raise ValidationError({name: [f"Must be at most {LARGEST_NUMBER}."]})
    if int(digits) < minimum:
        raise ValidationError({name: [f"Must be a whole number of at least {minimum}."]})
    return int(digits)


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

    def get_page_headers(self) -> dict[str, str]:
        """``X-Total-Count`` and ``Link`` (next, prev) of the page just served; none for a list."""
        if getattr(self, "limit", None) is None:
            return {}
        headers = {"X-Total-Count": str(self.count)}
        links = [
            f'<{url}>; rel="{rel}"'
            for url, rel in ((self.get_next_link(), "next"), (self.get_previous_link(), "prev"))
            if url
        ]
        if links:
            headers["Link"] = ", ".join(links)
        return headers

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
            parameter["schema"]["maximum"] = LARGEST_NUMBER
            if parameter["name"] == self.limit_query_param:
                parameter["description"] += f" Values above {self.max_limit} are capped."
        return parameters
