"""Rows from value tuples: exactly what the serializers give from model instances."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection
from django.db.models import Model
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from kpis.api.listing import (
    Memo,
    RepresentationPlan,
    RowColumns,
    cached_plan,
    column_converter,
    represent_queryset,
    represent_rows,
    represent_values,
    representation_plan,
    row_values,
)
from kpis.api.renderers import CsvRenderer, JsonRenderer
from kpis.api.serializers import (
    CellUniqueUsersSerializer,
    IntervalLedgerSerializer,
    ServiceTrafficVolumeSerializer,
)
from kpis.models import CellUniqueUsers, IntervalLedger, IntervalType, ServiceTrafficVolume

pytestmark = pytest.mark.django_db

moments = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


def make_rows(starts: list[datetime], values: list[int]) -> None:
    for index, (start, value) in enumerate(zip(starts, values, strict=False)):
        interval = IntervalType.FIVE_MINUTES if index % 3 else IntervalType.ONE_HOUR
        length = timedelta(minutes=5 if interval == IntervalType.FIVE_MINUTES else 60)
        common = {
            "interval_start_timestamp": start,
            "interval_end_timestamp": start + length,
            "interval": interval,
        }
        ServiceTrafficVolume.objects.create(**common, service_id=index, total_bytes=value)
        CellUniqueUsers.objects.create(
            **common, cell_id=index * 7, number_of_unique_users=value % 2**32
        )


def ordinary(serializer_class: type[serializers.ModelSerializer[Any]]) -> list[Any]:
    model: type[Model] = serializer_class.Meta.model
    queryset = model._default_manager.order_by("interval_start_timestamp", "id")
    return list(serializer_class(queryset, many=True).data)


def fast(serializer_class: type[serializers.ModelSerializer[Any]]) -> RowColumns:
    plan = representation_plan(serializer_class())
    assert plan is not None
    model: type[Model] = serializer_class.Meta.model
    queryset = model._default_manager.order_by("interval_start_timestamp", "id")
    return represent_queryset(row_values(queryset, plan), plan)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    starts=st.lists(moments, min_size=0, max_size=12),
    values=st.lists(st.integers(min_value=0, max_value=2**63 - 1), min_size=12, max_size=12),
)
def test_kpi_rows_are_byte_identical_to_the_model_serializers(
    starts: list[datetime], values: list[int]
) -> None:
    ServiceTrafficVolume.objects.all().delete()
    CellUniqueUsers.objects.all().delete()
    make_rows(starts, values)
    for serializer_class in (ServiceTrafficVolumeSerializer, CellUniqueUsersSerializer):
        expected = ordinary(serializer_class)
        rows = fast(serializer_class)
        assert rows == expected
        assert rows.plain  # the fast JSON path is taken
        assert JsonRenderer().render(rows) == JSONRenderer().render(expected)
        # A view gives the header of an empty list; the columns carry their own names.
        context = {"view": SimpleNamespace(get_serializer=serializer_class)}
        assert CsvRenderer().render(rows) == CsvRenderer().render(expected, None, context)


@given(moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_the_timestamp_shortcut_gives_drf_s_text(moment: datetime) -> None:
    field = ServiceTrafficVolumeSerializer().fields["interval_start_timestamp"]
    orm_step = connection.ops.convert_datetimefield_value  # type: ignore[attr-defined]
    shortcut = column_converter([orm_step], None, connection, field)
    assert shortcut.__name__ == "shortcut"  # not the ordinary path under another name
    assert shortcut(moment) == field.to_representation(orm_step(moment, None, connection))


@override_settings(TIME_ZONE="Europe/Berlin")
def test_another_time_zone_takes_the_ordinary_path() -> None:
    ServiceTrafficVolume.objects.create(
        interval_start_timestamp=datetime(2021, 7, 18, tzinfo=UTC),
        interval_end_timestamp=datetime(2021, 7, 18, 0, 5, tzinfo=UTC),
        interval=IntervalType.FIVE_MINUTES,
        service_id=1,
        total_bytes=2,
    )
    [row] = fast(ServiceTrafficVolumeSerializer)
    assert row["interval_start_timestamp"] == "2021-07-18T02:00:00+02:00"
    assert [row] == ordinary(ServiceTrafficVolumeSerializer)


def test_a_page_of_orm_values_is_represented_alike() -> None:
    make_rows(
        [datetime(2021, 7, 18, tzinfo=UTC) + timedelta(minutes=5 * n) for n in range(7)], [5] * 12
    )
    plan = cached_plan(ServiceTrafficVolumeSerializer)
    assert plan is not None
    queryset = ServiceTrafficVolume.objects.order_by("interval_start_timestamp", "id")
    page = list(queryset.values_list(*plan.sources)[2:5])
    assert represent_values(page, plan) == ordinary(ServiceTrafficVolumeSerializer)[2:5]


def test_integer_columns_pass_through_and_timestamps_do_not() -> None:
    plan = cached_plan(CellUniqueUsersSerializer)
    assert isinstance(plan, RepresentationPlan)
    kept = [name for name, field in zip(plan.names, plan.fields, strict=True) if field is None]
    assert kept == ["id", "interval", "cell_id", "number_of_unique_users"]


def test_a_serializer_with_a_computed_field_takes_the_ordinary_path() -> None:
    # The ledger's ``complete`` is a property of the model, not a column.
    assert representation_plan(IntervalLedgerSerializer()) is None
    assert IntervalLedger.objects.count() == 0


cells = st.none() | st.integers(min_value=-(2**70), max_value=2**70) | st.text() | st.booleans()


@given(
    rows=st.lists(st.tuples(st.integers(0, 5), cells, cells), max_size=8),
    texts=st.lists(st.text(), min_size=6, max_size=6),
)
def test_json_of_any_rows_is_drf_s_json(rows: list[tuple[int, Any, Any]], texts: list[str]) -> None:
    """Whatever the values (quotes, control characters, U+2028, huge ints), the bytes are DRF's."""
    memo = Memo(lambda value: texts[value])
    data = represent_rows(rows, ["a", "b", "c"], [(0, memo)])
    expected = [{"a": texts[a], "b": b, "c": c} for a, b, c in rows]
    assert data == expected
    assert JsonRenderer().render(data) == JSONRenderer().render(expected)
    indented = {"indent": 2}
    assert JsonRenderer().render(data, renderer_context=indented) == JSONRenderer().render(
        expected, renderer_context=indented
    )


@given(
    rows=st.lists(
        st.tuples(st.integers(-(2**70), 2**70), st.text(), st.none() | st.booleans() | st.text()),
        max_size=8,
    )
)
def test_csv_of_any_row_columns_is_the_csv_module_s(rows: list[tuple[int, str, Any]]) -> None:
    """Commas, quotes, line breaks, empty text: the column path writes what the csv module does."""
    names = ["a", "b", "c"]
    columns = RowColumns(names, list(zip(*rows, strict=True)))
    as_dicts = [dict(zip(names, row, strict=True)) for row in rows]
    context = {"view": SimpleNamespace(get_serializer=lambda: SimpleNamespace(fields=names))}
    assert CsvRenderer().render(columns) == CsvRenderer().render(as_dicts, None, context)


def test_row_columns_read_as_the_list_of_rows() -> None:
    rows = RowColumns(["a", "b"], [(1, 2, 3), ("x", "y", "z")])
    assert len(rows) == 3
    assert rows[0] == {"a": 1, "b": "x"} and rows[-1] == {"a": 3, "b": "z"}
    assert rows[1:] == [{"a": 2, "b": "y"}, {"a": 3, "b": "z"}]
    assert list(rows) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}, {"a": 3, "b": "z"}]
    with pytest.raises(IndexError):
        rows[3]
    with pytest.raises(TypeError):
        rows["results"]  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="2 names for 1 columns"):
        RowColumns(["a", "b"], [(1,)])


@pytest.mark.skipif(connection.vendor != "sqlite", reason="only SQLite keeps any value in a column")
@pytest.mark.parametrize("stored", ["", "garbage", 5, 1.5, "2021-07-18 00:00:00.500000"])
def test_a_timestamp_cell_sqlite_cannot_parse_is_written_as_drf_writes_it(stored: Any) -> None:
    """Selected as text, a cell still goes through the parse the sqlite3 module used to do."""
    make_rows([datetime(2021, 7, 18, tzinfo=UTC)], [5] * 12)
    table = ServiceTrafficVolume._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET interval_start_timestamp = %s", [stored])
    expected = ordinary(ServiceTrafficVolumeSerializer)
    rows = fast(ServiceTrafficVolumeSerializer)
    assert rows == expected
    assert JsonRenderer().render(rows) == JSONRenderer().render(expected)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="only SQLite keeps any value in a column")
@pytest.mark.parametrize("stored", ["", "garbage", 5])
@pytest.mark.parametrize("query", ["", "?limit=5"], ids=["list", "page"])
def test_an_unreadable_timestamp_cell_is_null_in_the_api_list_and_page(
    stored: Any, query: str, settings: Any
) -> None:
    settings.KPI_API_PUBLIC = True
    make_rows([datetime(2021, 7, 18, tzinfo=UTC)], [5] * 12)
    table = ServiceTrafficVolume._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET interval_start_timestamp = %s", [stored])
    response = APIClient().get(f"/api/KPIs/1/{query}")
    assert response.status_code == 200
    body = response.json()
    rows = body["results"] if query else body
    assert rows == ordinary(ServiceTrafficVolumeSerializer)
    assert rows[0]["interval_start_timestamp"] is None
