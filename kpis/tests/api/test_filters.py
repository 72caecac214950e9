"""The interval filters: fresh form state for every request."""

from __future__ import annotations

from django.db.models import Model
from django.http import QueryDict

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
