"""Query filters of the API; empty values are ignored, malformed ones give 400."""

from __future__ import annotations

import django_filters

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
        help_text="Rows whose interval ends at or before this time (ISO 8601; UTC if no offset).",
    )
    interval = django_filters.TypedChoiceFilter(
        field_name="interval",
        choices=IntervalType.choices,
        coerce=int,
        help_text="1 for five-minute rows, 2 for one-hour rows.",
    )
