"""The OpenAPI schema is valid and the API's real responses conform to it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from jsonschema import ValidationError
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from kpis.models import IntervalLedger, ServiceTrafficVolume
from kpis.tests.conftest import GeneratedData, shipped_assets

pytestmark = pytest.mark.django_db

# (method, url, templated path of the schema)
REQUESTS = [
    ("get", "/api/KPIs/", "/api/KPIs/"),
    ("get", "/api/KPIs/1/", "/api/KPIs/1/"),
    ("get", "/api/KPIs/2/", "/api/KPIs/2/"),
    ("get", "/api/KPIs/1/?interval=2", "/api/KPIs/1/"),
    ("get", "/api/KPIs/2/?interval=1&limit=5&offset=3", "/api/KPIs/2/"),
    (
        "get",
        "/api/KPIs/1/?interval_start_timestamp__gte=2021-07-18T00:30:00Z"
        "&interval_end_timestamp__lte=",
        "/api/KPIs/1/",
    ),
    ("get", "/api/KPIs/1/?interval=1&format=csv", "/api/KPIs/1/"),
    ("get", "/api/KPIs/1/?interval=3", "/api/KPIs/1/"),
    ("get", "/api/KPIs/2/?interval_start_timestamp__gte=yesterday", "/api/KPIs/2/"),
    ("get", "/api/KPIs/1/?limit=0", "/api/KPIs/1/"),
    ("get", "/api/KPIs/1/?offset=-1&format=csv", "/api/KPIs/1/"),
    ("get", "/api/KPIs/?format=csv", "/api/KPIs/"),
    ("get", "/api/KPIs/1/?format=xml", "/api/KPIs/1/"),
    ("get", "/api/KPIs/2/?interval_end_timestamp__lte=9999-12-31T23:59:59-01:00", "/api/KPIs/2/"),
    ("get", "/api/KPIs/1/?limit=2&offset=2&format=csv", "/api/KPIs/1/"),
    ("post", "/api/KPIs/", "/api/KPIs/"),
    ("delete", "/api/KPIs/1/", "/api/KPIs/1/"),
    ("get", "/api/intervals/", "/api/intervals/"),
    ("get", "/api/intervals/?interval=2&limit=1", "/api/intervals/"),
    ("get", "/api/intervals/?format=csv", "/api/intervals/"),
    ("get", "/api/intervals/?interval_end_timestamp__lte=soon", "/api/intervals/"),
    ("put", "/api/intervals/", "/api/intervals/"),
    ("get", "/api/health/", "/api/health/"),
    ("post", "/api/health/", "/api/health/"),
]


@pytest.fixture
def token_client(db: None) -> APIClient:
    user = get_user_model().objects.create_user("analyst", password="x-long-password-1")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def spec() -> dict[str, Any]:
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def _closed(schema: Any) -> Any:
    """The same schema where objects may carry no field it does not declare."""
    if isinstance(schema, dict):
        closed = {key: _closed(value) for key, value in schema.items()}
        if "properties" in closed and "additionalProperties" not in closed:
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


def _assert_conforms(spec: dict[str, Any], path: str, method: str, response: Any) -> None:
    operation = spec["paths"][path].get("get" if method == "get" else method)
    # Other methods are not operations: the GET operation documents their 405.
    operation = operation or spec["paths"][path]["get"]
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{method} {path}: status {response.status_code} undocumented"
    for name, header in documented.get("headers", {}).items():
        assert response.has_header(name) or not header.get("required"), f"{path}: no {name}"
    if "content" not in documented:
        assert response.content == b"", f"{path}: a body where none is documented"
        return
    media_type = response["Content-Type"].split(";")[0]
    assert media_type in documented["content"], f"{path}: {media_type} undocumented"
    body = response.content.decode() if media_type == "text/csv" else json.loads(response.content)
    _validate(spec, documented["content"][media_type]["schema"], body)


def _validate(spec: dict[str, Any], schema: dict[str, Any], value: Any) -> None:
    schema = copy.deepcopy(schema)
    schema["components"] = _closed(spec["components"])
    OAS30Validator(schema, format_checker=OAS30Validator.FORMAT_CHECKER).validate(value)


def test_the_schema_is_a_valid_openapi_3_document(spec: dict[str, Any]) -> None:
    validate_spec(spec)
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {
        "/api/KPIs/",
        "/api/KPIs/1/",
        "/api/KPIs/2/",
        "/api/intervals/",
        "/api/health/",
    }


def test_the_schema_names_every_filter_and_error(spec: dict[str, Any]) -> None:
    for path in ("/api/KPIs/1/", "/api/KPIs/2/", "/api/intervals/"):
        operation = spec["paths"][path]["get"]
        parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
        assert set(parameters) == {
            "interval_start_timestamp__gte",
            "interval_end_timestamp__lte",
            "interval",
            "limit",
            "offset",
            "If-None-Match",
        }
        # Empty values are ignored by the API, and the schema says so.
        query = [parameter for parameter in parameters.values() if parameter["in"] == "query"]
        assert len(query) == 5 and all(parameter["allowEmptyValue"] for parameter in query)
        assert set(operation["responses"]) == {"200", "304", "400", "401", "405", "406", "429"}
        assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}
        assert set(operation["responses"]["200"]["headers"]) == {"X-Total-Count", "Link", "ETag"}
    kpis = spec["paths"]["/api/KPIs/"]["get"]
    assert set(kpis["responses"]) == {"200", "304", "400", "401", "405", "406", "429"}


def test_every_get_documents_its_etag_and_the_304_without_a_body(spec: dict[str, Any]) -> None:
    for path, operations in spec["paths"].items():
        operation = operations["get"]
        (if_none_match,) = [p for p in operation["parameters"] if p["in"] == "header"]
        assert if_none_match["name"] == "If-None-Match"
        assert "allowEmptyValue" not in if_none_match
        ok, not_modified = operation["responses"]["200"], operation["responses"]["304"]
        assert ok["headers"]["ETag"]["required"] is True, path
        assert "content" not in not_modified, path
        assert set(not_modified["headers"]) == {"ETag"}, path


def test_a_matching_if_none_match_gives_the_documented_304(
    generated_data: GeneratedData,
    token_client: APIClient,
    spec: dict[str, Any],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Health is 200 over these rows of the past only with a lag limit of centuries.
    settings.KPI_HEALTH_MAX_LAG_SECONDS = 10**10
    # Health's lag_seconds, and so its tag, changes every second: stop the clock.
    stopped = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: stopped)
    for path in spec["paths"]:
        for accept in ("application/json", "text/csv"):
            first = token_client.get(path, HTTP_ACCEPT=accept)
            if (path, accept) == ("/api/health/", "text/csv"):
                assert first.status_code == 406
                continue
            assert first.status_code == 200, (path, accept)
            _assert_conforms(spec, path, "get", first)
            again = token_client.get(path, HTTP_ACCEPT=accept, HTTP_IF_NONE_MATCH=first["ETag"])
            assert again.status_code == 304, (path, accept)
            _assert_conforms(spec, path, "get", again)
            other = token_client.get(path, HTTP_ACCEPT=accept, HTTP_IF_NONE_MATCH='"other"')
            assert other.status_code == 200 and other.content == first.content


def test_the_if_none_match_example_is_the_real_tag_of_the_kpi_list(
    token_client: APIClient, spec: dict[str, Any]
) -> None:
    operation = spec["paths"]["/api/KPIs/"]["get"]
    (header,) = [p for p in operation["parameters"] if p["in"] == "header"]
    response = token_client.get("/api/KPIs/", HTTP_IF_NONE_MATCH=header["example"])
    assert response.status_code == 304
    assert response["ETag"] == operation["responses"]["304"]["headers"]["ETag"]["example"]


def test_health_is_documented_as_anonymous_with_200_and_503(spec: dict[str, Any]) -> None:
    operation = spec["paths"]["/api/health/"]["get"]
    assert operation["operationId"] == "health_check"
    assert operation["security"] == []
    responses = operation["responses"]
    assert set(responses) == {"200", "304", "405", "406", "429", "503"}
    for status in ("200", "503"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Health"
        }
    health = spec["components"]["schemas"]["Health"]
    assert set(health["required"]) == {"status", "latest_interval_end", "lag_seconds"}
    assert spec["components"]["schemas"]["HealthStatusEnum"]["enum"] == [
        "ok",
        "stale",
        "empty",
        "database unavailable",
    ]
    examples = {
        status: {
            example["value"]["status"]
            for example in responses[status]["content"]["application/json"]["examples"].values()
        }
        for status in ("200", "503")
    }
    assert examples == {"200": {"ok"}, "503": {"stale", "empty", "database unavailable"}}
    assert set(responses["429"]["headers"]) == {"Retry-After"}


def test_each_kpi_path_has_its_own_row_type(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for path, row in (
        ("/api/KPIs/1/", "ServiceTrafficVolume"),
        ("/api/KPIs/2/", "CellUniqueUsers"),
    ):
        ok = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        plain, page = schemas[ok["schema"]["$ref"].rsplit("/", 1)[1]]["oneOf"]
        assert plain == {"type": "array", "items": {"$ref": f"#/components/schemas/{row}"}}
        assert page == {"$ref": f"#/components/schemas/{row}Page"}
    assert "KpiRow" not in schemas


def test_every_example_conforms_to_its_schema(spec: dict[str, Any]) -> None:
    checked = 0
    for operations in spec["paths"].values():
        operation = operations["get"]
        for parameter in operation["parameters"]:
            _validate(spec, parameter["schema"], parameter["example"])
            checked += 1
        for response in operation["responses"].values():
            for header in response.get("headers", {}).values():
                if "example" in header:
                    _validate(spec, header["schema"], header["example"])
            for media in response.get("content", {}).values():
                examples = [example["value"] for example in media.get("examples", {}).values()]
                for example in examples or [media["example"]]:
                    _validate(spec, media["schema"], example)
                    checked += 1
    assert checked > 40


def test_real_responses_conform_to_the_schema(
    generated_data: GeneratedData, token_client: APIClient, spec: dict[str, Any]
) -> None:
    assert ServiceTrafficVolume.objects.filter(interval=2).exists()
    assert IntervalLedger.objects.exclude(rejects={}).exists()
    statuses = set()
    for method, url, path in REQUESTS:
        response = getattr(token_client, method)(url)
        _assert_conforms(spec, path, method, response)
        statuses.add(response.status_code)
    anonymous = APIClient().get("/api/KPIs/1/")
    _assert_conforms(spec, "/api/KPIs/1/", "get", anonymous)
    xml = token_client.get("/api/intervals/", HTTP_ACCEPT="application/xml")
    _assert_conforms(spec, "/api/intervals/", "get", xml)
    assert statuses | {anonymous.status_code, xml.status_code} == {200, 400, 401, 405, 406, 503}


def test_a_row_of_the_wrong_shape_would_not_conform(
    generated_data: GeneratedData, token_client: APIClient, spec: dict[str, Any]
) -> None:
    response = token_client.get("/api/KPIs/1/?limit=1")
    body = json.loads(response.content)
    body["results"][0]["msisdn"] = "4917000001"
    response.content = json.dumps(body).encode()
    with pytest.raises(ValidationError, match="msisdn"):
        _assert_conforms(spec, "/api/KPIs/1/", "get", response)


def test_swagger_ui_loads_only_static_files_shipped_with_the_project() -> None:
    response = APIClient().get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assets = shipped_assets(html)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    # Its start-up script is a file of its own (no inline script under the CSP).
    assert "<script>" not in html
    assert '<script src="/api/docs/?script="></script>' in html
    script = APIClient().get("/api/docs/?script=")
    assert script["Content-Type"].startswith("application/javascript")
    assert "/api/schema/" in script.content.decode()
    assert "https://" not in html.replace("https://swagger.io", "")
