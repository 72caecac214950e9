"""Query filters of the API; empty values are ignored, malformed ones give 400."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import django_filters
from django.db.models import QuerySet

from kpis.models import IntervalType


class IntervalFilter(django_filters.FilterSet):
    """The three filters of the seed's API, shared by KPI rows and the ledger."""

    interval_start_timestamp__gte = django_filters.IsoDateTimeFilter(
        field_name="interval_start_timestamp",
        lookup_expr="gte",
        help_text="Rows whose interval starts at or after this time (ISO 8601; UTC if no offset).",
    )
    interval_end_timestamp__lte = django_filters.IsoDateTimeFilter(
        field_name="interval_end_timestamp",
        lookup_expr="lte",
        method="filter_end_lte",
        help_text="Rows whose interval ends at or before this time (ISO 8601; UTC if no offset).",
    )
    interval = django_filters.TypedChoiceFilter(
        field_name="interval",
        choices=IntervalType.choices,
        coerce=int,
        help_text="1 for five-minute rows, 2 for one-hour rows.",
    )

    def filter_end_lte(self, queryset: QuerySet[Any], name: str, value: datetime) -> QuerySet[Any]:
        """Rows that end at or before ``value``.

        An interval starts before it ends, so its start is before ``value`` too:
        saying so bounds the (start, interval) index scan on both sides instead
        of reading every row up to the end of the table.
        """
        return queryset.filter(
            interval_end_timestamp__lte=value, interval_start_timestamp__lt=value
        )
