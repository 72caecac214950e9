"""The OpenAPI description of the API: status codes, media types, headers and examples.

The views say which responses they give; this module says what each looks like, with
values taken from the contract in docs/api.md, so that the schema, a generated client and a
fuzzer all see the API as it behaves.
"""

from __future__ import annotations

import copy
import re
from datetime import timedelta
from typing import Any

from django.http import HttpResponse
from django.utils.cache import set_response_etag
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from kpis.api.filters import EARLIEST_DATE, LATEST_DATE, TIME_FORMAT_HELP
from kpis.api.middleware import API_PATH_PREFIXES
from kpis.api.renderers import CsvRenderer
from kpis.api.serializers import DetailErrorSerializer, HealthSerializer
from kpis.registry import KPIS, KpiDefinition

FILTER_NAMES = ["interval_start_timestamp__gte", "interval_end_timestamp__lte", "interval"]
PAGING_NAMES = ["limit", "offset"]
JSON = "application/json"
CSV = "text/csv"


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """``Authorization: Bearer <key>``, a scheme of its own beside DRF's ``Token <key>``."""

    target_class = "kpis.api.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": 'The same API token as tokenAuth, with the prefix "Bearer".',
        }


def _messages() -> serializers.ListField:
    return serializers.ListField(child=serializers.CharField(), required=False)


class QueryErrorSerializer(serializers.Serializer[object]):
    """For the schema: the body of a 400, one key per rejected query parameter."""

    interval_start_timestamp__gte = _messages()
    interval_end_timestamp__lte = _messages()
    interval = _messages()
    limit = _messages()
    offset = _messages()
    format = _messages()


def _detail(description: str) -> OpenApiResponse:
    return OpenApiResponse(DetailErrorSerializer, description=description)


def error_responses(*, paged: bool) -> dict[tuple[int, str], OpenApiResponse]:
    """The error responses every API operation can give, all JSON."""
    names = [*FILTER_NAMES, *PAGING_NAMES, "format"] if paged else ["format"]
    return {
        (400, JSON): OpenApiResponse(
            QueryErrorSerializer,
            description=f"A malformed query parameter ({', '.join(names)}); the body names it.",
        ),
        (401, JSON): _detail("No valid token or session (unless KPI_API_PUBLIC is on)."),
        (405, JSON): _detail("Any method other than GET, HEAD or OPTIONS."),
        (406, JSON): _detail("An Accept header that asks for neither JSON nor CSV."),
        (429, JSON): _detail("Too many requests; retry after the Retry-After header's seconds."),
    }


CSV_RESPONSE = OpenApiResponse(
    OpenApiTypes.STR,
    description=(
        "With Accept: text/csv (or ?format=csv): a header row of the JSON field names, then one "
        "line per row, in the same order."
    ),
)

# ?format=csv is for browsers and curl; a generated client asks by Accept and parses JSON.
FORMAT_UNDOCUMENTED = OpenApiParameter("format", exclude=True)

RESPONSE_HEADERS = [
    OpenApiParameter(
        "X-Total-Count",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        response=[200],
        description="Paged CSV only: the number of rows of all pages.",
    ),
    OpenApiParameter(
        "Link",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[200],
        description='Paged CSV only: the next and previous pages, as <url>; rel="next".',
    ),
    OpenApiParameter(
        "WWW-Authenticate",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[401],
        description="Token: how to authenticate.",
    ),
    OpenApiParameter(
        "Allow",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[405],
        description="The methods this path allows.",
    ),
    OpenApiParameter(
        "Retry-After",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        response=[429],
        description="Seconds to wait before the next request.",
    ),
]

# Health answers JSON only and needs no credentials: no 400, 401 or CSV.
HEALTH_RESPONSE_HEADERS = [
    header for header in RESPONSE_HEADERS if header.name in {"Allow", "Retry-After"}
]


def health_responses() -> dict[tuple[int, str], OpenApiResponse]:
    """The answers of ``/api/health/``: the same body for 200 and 503, JSON errors otherwise."""
    return {
        (200, JSON): OpenApiResponse(HealthSerializer, description='"ok": the data is fresh.'),
        (503, JSON): OpenApiResponse(
            HealthSerializer,
            description='"stale", "empty" or "database unavailable": a monitor should alert.',
        ),
        (405, JSON): _detail("Any method other than GET, HEAD or OPTIONS."),
        (406, JSON): _detail("An Accept header that does not allow JSON."),
        (429, JSON): _detail(
            "More than KPI_API_THROTTLE_HEALTH requests from one address; see Retry-After."
        ),
    }


class AnonymousSchema(AutoSchema):
    """An operation open to anyone: an empty ``security`` list says no credentials are needed."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is not None:
            operation["security"] = []
        return operation


_TIME_RANGE = (
    f"Dates from {EARLIEST_DATE} to {LATEST_DATE}, so that every UTC offset stays within the "
    "years 1 to 9999. An empty value is ignored."
)
# The schema's `date-time` is RFC 3339; the pattern keeps out the first and last dates.
_TIME_PATTERN = rf"^(?!{EARLIEST_DATE - timedelta(days=1)}|{LATEST_DATE + timedelta(days=1)})"


def _time_parameter(name: str, text: str, example: str) -> OpenApiParameter:
    return OpenApiParameter(
        name,
        OpenApiTypes.DATETIME,
        OpenApiParameter.QUERY,
        description=f"{text} (ISO 8601; UTC if no offset). {_TIME_RANGE}",
        pattern=_TIME_PATTERN,
        extensions={"x-example": example},
    )


FILTER_PARAMETERS = [
    _time_parameter(
        "interval_start_timestamp__gte",
        "Rows whose interval starts at or after this time",
        "2021-07-18T00:00:00Z",
    ),
    _time_parameter(
        "interval_end_timestamp__lte",
        "Rows whose interval ends at or before this time",
        "2021-07-18T01:00:00Z",
    ),
    OpenApiParameter(
        "interval",
        OpenApiTypes.INT,
        OpenApiParameter.QUERY,
        enum=[1, 2],
        description="1 for five-minute rows, 2 for one-hour rows. An empty value is ignored.",
        extensions={"x-example": 1},
    ),
]


def _operation_id(kpi: KpiDefinition) -> str:
    """service_traffic_volume_rows for ServiceTrafficVolume: a client's function name."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kpi.name).lower() + "_rows"


class KpiRowsSchema(AutoSchema):
    """One operation per KPI, each with its own row type; the catch-all id URL stays out."""

    def _kpi(self) -> KpiDefinition | None:
        return getattr(self.view, "kpi", None)

    def is_excluded(self) -> bool:
        return self._kpi() is None

    def get_operation_id(self) -> str:
        kpi = self._kpi()
        assert kpi is not None
        return _operation_id(kpi)

    def get_summary(self) -> str:
        kpi = self._kpi()
        assert kpi is not None
        return f"Rows of KPI {kpi.id}, {kpi.name}"

    def get_tags(self) -> list[str]:
        return ["kpis"]

    def get_response_serializers(self) -> Any:
        return {
            (200, JSON): OpenApiResponse(
                self.view.get_serializer_class(),  # type: ignore[attr-defined]
                description="Without limit the plain list; with limit the page envelope.",
            ),
            (200, CSV): CSV_RESPONSE,
            **error_responses(paged=True),
        }


# Example bodies, from the contract in docs/api.md. The row examples of a KPI follow its fields.
_ROW_TIMES = {
    "interval_start_timestamp": "2021-07-18T00:00:00Z",
    "interval_end_timestamp": "2021-07-18T00:05:00Z",
    "interval": 1,
}
_ROWS = {
    "ServiceTrafficVolume": [
        {"id": 1, **_ROW_TIMES, "service_id": 1, "total_bytes": 16100},
        {"id": 2, **_ROW_TIMES, "service_id": 4, "total_bytes": 15200},
    ],
    "CellUniqueUsers": [
        {"id": 1, **_ROW_TIMES, "cell_id": 10, "number_of_unique_users": 312},
        {"id": 2, **_ROW_TIMES, "cell_id": 11, "number_of_unique_users": 287},
    ],
}
_LEDGER = [
    {
        "id": 1,
        **_ROW_TIMES,
        "revision": 1,
        "complete": True,
        "intervals_processed": 0,
        "files_counted": 2,
        "files_failed": 0,
        "files_duplicate": 0,
        "files_missing": 0,
        "rows_accepted": 40000,
        "rows_rejected": 2,
        "rejects": {"bad_msisdn": 2},
        "needs_rollup": False,
        "processed_at": "2021-07-18T00:06:03.512000Z",
    }
]
_KPI_LIST = [{"id": kpi.id, "name": kpi.name} for kpi in KPIS]
_QUERY_ERROR: dict[str, Any] = {"interval_start_timestamp__gte": [TIME_FORMAT_HELP]}
_FORMAT_ERROR: dict[str, Any] = {"format": ["Must be one of: json, csv."]}
_ERRORS: dict[str, Any] = {
    "401": {"detail": "Authentication credentials were not provided."},
    "405": {"detail": 'Method "POST" not allowed.'},
    "406": {"detail": "Could not satisfy the request Accept header."},
    "429": {"detail": "Request was throttled. Expected available in 42 seconds."},
}


HEALTH_OPERATION = "health_check"
_HEALTH_EXAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "200": {
        "ok": {
            "summary": "Fresh data",
            "value": {
                "status": "ok",
                "latest_interval_end": "2021-07-18T00:05:00Z",
                "lag_seconds": 312,
            },
        }
    },
    "503": {
        "stale": {
            "summary": "The newest interval ended too long ago",
            "value": {
                "status": "stale",
                "latest_interval_end": "2021-07-18T00:05:00Z",
                "lag_seconds": 5400,
            },
        },
        "empty": {
            "summary": "Nothing processed yet",
            "value": {"status": "empty", "latest_interval_end": None, "lag_seconds": None},
        },
        "database_unavailable": {
            "summary": "The database cannot be reached",
            "value": {
                "status": "database unavailable",
                "latest_interval_end": None,
                "lag_seconds": None,
            },
        },
    },
}
# The tag of the KPI list: the API's ETag is Django's digest of the body.
_ETAG_EXAMPLE = set_response_etag(HttpResponse(JSONRenderer().render(_KPI_LIST)))["ETag"]
_ETAG = {
    "schema": {"type": "string"},
    "required": True,
    "description": (
        "The body's tag, to send back in If-None-Match; weak (W/) when the body is gzipped."
    ),
    "example": _ETAG_EXAMPLE,
}
_IF_NONE_MATCH = {
    "in": "header",
    "name": "If-None-Match",
    "schema": {"type": "string"},
    "description": (
        "The ETag of an earlier answer (or several, comma-separated): a 304 without a body "
        "if the answer would be the same."
    ),
    "example": _ETAG_EXAMPLE,
}
_NOT_MODIFIED = {
    "description": "Not modified: If-None-Match holds the tag of this answer. No body.",
    "headers": {"ETag": _ETAG},
}


def _add_conditional_get(operation: dict[str, Any]) -> None:
    """Every GET of the API carries an ETag and answers a matching If-None-Match with 304."""
    # Copies, so that a YAML rendering holds no anchors and aliases.
    operation.setdefault("parameters", []).append(copy.deepcopy(_IF_NONE_MATCH))
    responses = operation["responses"]
    responses["200"].setdefault("headers", {})["ETag"] = copy.deepcopy(_ETAG)
    responses["304"] = copy.deepcopy(_NOT_MODIFIED)
    operation["responses"] = dict(sorted(responses.items()))


def _page(rows: list[dict[str, Any]], url: str) -> dict[str, Any]:
    limit = len(rows)
    return {
        "count": 936,
        "next": f"{url}?limit={limit}&offset={limit}",
        "previous": None,
        "results": rows,
    }


def _ok_examples(rows: list[dict[str, Any]], url: str | None) -> dict[str, dict[str, Any]]:
    examples: dict[str, dict[str, Any]] = {
        "list": {"summary": "Without limit: the plain list", "value": rows}
    }
    if url is not None:
        examples["page"] = {"summary": "With limit: a page", "value": _page(rows, url)}
    return examples


def _examples_by_operation() -> dict[str, tuple[list[dict[str, Any]], str | None]]:
    base = "http://127.0.0.1:8000/api"
    operations: dict[str, tuple[list[dict[str, Any]], str | None]] = {
        "kpis_list": (_KPI_LIST, None),
        "intervals_list": (_LEDGER, f"{base}/intervals/"),
    }
    for kpi in KPIS:
        operations[_operation_id(kpi)] = (_ROWS[kpi.name], f"{base}/KPIs/{kpi.id}/")
    return operations


def _split_paged_lists(components: dict[str, Any]) -> None:
    """Name the page envelope of each ``Paginated...List``, so clients get a named type."""
    for name in [name for name in components if name.startswith("Paginated")]:
        alternatives = components[name].get("oneOf", [])
        if len(alternatives) == 2 and alternatives[1].get("type") == "object":
            page_name = name.removeprefix("Paginated").removesuffix("List") + "Page"
            components[page_name] = alternatives[1]
            alternatives[1] = {"$ref": f"#/components/schemas/{page_name}"}


def _link(operation_id: str, description: str) -> dict[str, Any]:
    """A link to ``operation_id`` that needs nothing from the response.

    The answer is a plain list or a page envelope, depending on ``limit``, and either may
    be empty: a pointer into its first item (``$response.body#/0/...``) would resolve for
    one shape only, and for none when nothing matched. So the links carry no parameters
    and say in words which filters to pass on.
    """
    return {"operationId": operation_id, "description": description}


_SAME_FILTERS = (
    "pass on interval_start_timestamp__gte, interval_end_timestamp__lte and interval to see "
    "the same intervals"
)


def _links(operation_id: str) -> dict[str, Any]:
    """Ledger entries lead to the KPI rows of their intervals, and KPI rows to their entries."""
    if operation_id == "intervals_list":
        return {
            f"{kpi.name}Rows": _link(
                _operation_id(kpi), f"The {kpi.name} rows of these intervals: {_SAME_FILTERS}."
            )
            for kpi in KPIS
        }
    if operation_id in {_operation_id(kpi) for kpi in KPIS}:
        return {
            "LedgerEntries": _link(
                "intervals_list",
                f"The ledger entries of these rows' intervals (files counted, failed, too "
                f"late; complete or not): {_SAME_FILTERS}.",
            )
        }
    return {}


def finish_schema(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: empty query values, examples, page types, ETag and 304."""
    _split_paged_lists(result.get("components", {}).get("schemas", {}))
    examples = _examples_by_operation()
    for path, operations in result["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    # An empty value is ignored, as if the parameter were not given.
                    parameter["allowEmptyValue"] = True
                    if parameter["name"] == "interval":
                        # The same enum as the rows' field, so a client has one type for both.
                        parameter["schema"] = {"$ref": "#/components/schemas/IntervalEnum"}
                    example = parameter.pop("x-example", None)
                    if example is not None:
                        parameter["example"] = example
                    elif parameter["name"] in PAGING_NAMES:
                        parameter["example"] = 2 if parameter["name"] == "limit" else 0
            responses = operation["responses"]
            errors = dict(_ERRORS)
            if operation["operationId"] in examples:
                rows, url = examples[operation["operationId"]]
                if links := _links(operation["operationId"]):
                    responses["200"]["links"] = links
                responses["200"]["content"][JSON]["examples"] = _ok_examples(rows, url)
                responses["200"]["content"][CSV]["example"] = CsvRenderer().render(rows).decode()
                errors["400"] = _QUERY_ERROR if url else _FORMAT_ERROR
            elif operation["operationId"] == HEALTH_OPERATION:
                for status, named in _HEALTH_EXAMPLES.items():
                    responses[status]["content"][JSON]["examples"] = named
            for status, body in errors.items():
                if status in responses:
                    responses[status]["content"][JSON]["example"] = body
            if method == "get" and path.startswith(API_PATH_PREFIXES):
                _add_conditional_get(operation)
    return result
