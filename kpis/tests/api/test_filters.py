"""The interval filters: fresh form state for every request."""

from __future__ import annotations

import pytest
from django.db.models import Model
from django.http import QueryDict
from rest_framework.test import APIClient

from kpis.api.filters import IntervalFilter
from kpis.models import IntervalLedger


def bound(query: str, model: type[Model]) -> IntervalFilter:
    return IntervalFilter(QueryDict(query), queryset=model._default_manager.all())


def test_an_invalid_request_leaves_the_next_one_valid() -> None:
    wrong = bound("interval=9&interval_start_timestamp__gte=yesterday", IntervalLedger)
    assert not wrong.is_valid()
    assert set(wrong.errors) == {"interval", "interval_start_timestamp__gte"}
    right = bound("interval=2&interval_start_timestamp__gte=2021-07-18T00:00:00Z", IntervalLedger)
    assert right.is_valid(), right.errors
    assert right.form.cleaned_data["interval"] == 2
    assert right.form.fields["interval"] is not wrong.form.fields["interval"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "errors"),
    [
        (
            "interval=3",
            {"interval": ["3 is not an interval type: use 1 (five minutes) or 2 (one hour)."]},
        ),
        (
            "interval_start_timestamp__gte=18.07.2021",
            {
                "interval_start_timestamp__gte": [
                    "Enter a date/time in ISO 8601, e.g. 2021-07-18T00:00:00Z or "
                    "2021-07-18T02:00:00+02:00 (UTC when no offset is given)."
                ]
            },
        ),
        (
            "interval_end_timestamp__lte=2021-07-18 25:00",
            {
                "interval_end_timestamp__lte": [
                    "Enter a date/time in ISO 8601, e.g. 2021-07-18T00:00:00Z or "
                    "2021-07-18T02:00:00+02:00 (UTC when no offset is given)."
                ]
            },
        ),
    ],
)
def test_a_malformed_filter_says_what_is_accepted(
    query: str, errors: dict[str, list[str]], settings: object
) -> None:
    settings.KPI_API_PUBLIC = True  # type: ignore[attr-defined]
    for path in ("/api/KPIs/1/", "/api/intervals/"):
        response = APIClient().get(f"{path}?{query}")
        assert response.status_code == 400
        assert response.json() == errors
