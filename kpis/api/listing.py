"""Long lists serialised from value tuples, with the serializer's own field representations.

A ModelSerializer builds a model instance per row and asks every field of every
row for its attribute and its representation; for a day of KPI rows that is most
of the request. Here the database's raw rows are read column by column: integer
columns pass through as they are, and every other column's value goes through the
ORM's converters and the field's ``to_representation`` once per distinct value (a
day of rows has a few hundred distinct timestamps). The serializer still names the
fields, their order and their output. The result stays column by column
(:class:`RowColumns`), so that the CSV renderer never needs a dict per row.

What it buys, in place of DRF's ``ListAPIView.list`` with a ModelSerializer per row:
the one-day request (936 rows) on SQLite takes about a fifth of the CPU time, 5.6
to 7.7 ms against 29 to 37 ms, JSON and CSV alike, on a 2-vCPU machine
(``bench/bespoke.py``, "listing.py off"; docs/performance.md, "What each bespoke
API module buys"); on a quiet machine the whole request takes 4.7 ms and its raw
SQL 1.6 ms (``bench/api_speed.py``). Every response is byte for byte DRF's
(``kpis/tests/api/test_responses_unchanged.py``). Fetching 256 rows at a time
instead of all at once (:func:`_fetch_columns`) shows no gain in the same
benchmark (-0.2 to +0.1 ms), which collects garbage before each request; the
0.2 ms it saved when it came was fewer collections during the request.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from typing import Any, overload

from django.conf import settings
from django.db import connections, models
from django.db.models import Func, QuerySet
from django.db.models.sql.constants import CURSOR
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.functional import SimpleLazyObject
from rest_framework import ISO_8601, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

Convert = Callable[[Any], Any]
# Rows fetched at a time: fewer than the garbage collector's first threshold (700 new objects).
_FETCH_ROWS = 256


def _passes_through(field: serializers.Field[Any, Any, Any, Any], model_field: Any) -> bool:
    """True when the field's representation of every value the column holds is the value."""
    if not isinstance(model_field, models.IntegerField):
        return False
    if type(field) is serializers.IntegerField:  # int(value) of an int
        return True
    # the same, unless told to give strings (the stubs predate this field)
    if type(field) is serializers.BigIntegerField:  # type: ignore[attr-defined]
        return not getattr(field, "coerce_to_string", api_settings.COERCE_BIGINT_TO_STRING)
    if type(field) is serializers.ChoiceField:  # maps str(key) back to the same int key
        return all(type(key) is int for key in field.choice_strings_to_values.values())
    return False


def _represent(field: serializers.Field[Any, Any, Any, Any]) -> Convert:
    # As Serializer.to_representation: None stays None without asking the field.
    return lambda value: None if value is None else field.to_representation(value)


@functools.lru_cache(maxsize=256)  # the fields of cached plans: the same in every request
def _field_signature(field: serializers.Field[Any, Any, Any, Any]) -> str:
    """Fields of one class and options represent a value alike, whatever their name."""
    options = {
        name: value
        for name, value in getattr(field, "_kwargs", {}).items()
        if name not in ("source", "label", "help_text")
    }
    return repr((type(field), sorted(options.items())))


@functools.lru_cache(maxsize=256)  # model fields live as long as the process
def _model_field_signature(field: models.Field[Any, Any]) -> str:
    """Model fields of one class and options store values alike, whatever their name."""
    return repr(field.deconstruct()[1:])


@dataclass(frozen=True)
class Memo:
    """A conversion and the results it already gave, by input value."""

    function: Convert
    seen: dict[Any, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RepresentationPlan:
    """Output names, model columns, and the serializer field of each column (None: as is)."""

    names: list[str]
    sources: list[str]
    fields: list[serializers.Field[Any, Any, Any, Any] | None]


def representation_plan(serializer: serializers.ModelSerializer[Any]) -> RepresentationPlan | None:
    """How to build the serializer's output from the model's columns.

    None when a field is not a plain column of the model (a property, a nested or
    dotted source, a method field): such serializers take the ordinary path.
    """
    model: type[models.Model] = serializer.Meta.model
    columns = {field.name: field for field in model._meta.concrete_fields}
    plan = RepresentationPlan([], [], [])
    for each in serializer.fields.values():
        if each.write_only or not isinstance(each.source, str) or each.source not in columns:
            return None
        if isinstance(each, serializers.BaseSerializer | serializers.SerializerMethodField):
            return None
        plan.names.append(str(each.field_name))
        plan.sources.append(each.source)
        plan.fields.append(None if _passes_through(each, columns[each.source]) else each)
    return plan


class RowColumns(Sequence[dict[str, Any]]):
    """A list of rows held column by column, each column a sequence of represented values.

    It reads as the list of row dicts the serializer would give; renderers that know
    it (their ``renders_row_columns`` is true) write it from the columns. ``types``
    holds the set of value types of each column. ``plain`` says that every value is an
    int, None, or printable ASCII text without quotes or backslashes, and so is every
    name: text any JSON encoder writes alike (see ``kpis.api.renderers.JsonRenderer``).
    """

    __slots__ = ("columns", "names", "plain", "types")

    def __init__(self, names: list[str], columns: list[Sequence[Any]]) -> None:
        if columns and len(columns) != len(names):
            raise ValueError(f"{len(names)} names for {len(columns)} columns")
        self.names, self.columns = names, columns
        self.types = [frozenset(map(type, column)) for column in columns]
        self.plain = _plain_text(names) and all(map(_plain_column, columns, self.types))

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self[position] for position in range(*index.indices(len(self)))]
        position = operator.index(index)  # TypeError for a key, as a list gives
        if not -len(self) <= position < len(self):
            raise IndexError("row index out of range")
        return dict(zip(self.names, [column[position] for column in self.columns], strict=True))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # map() rather than a generator: the dicts are built without a Python frame per row.
        return map(dict, map(zip, repeat(self.names), self.tuples()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RowColumns | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like the list it stands for

    def tuples(self) -> Iterator[tuple[Any, ...]]:
        """The rows as value tuples, in column order."""
        return zip(*self.columns, strict=True)

    def __repr__(self) -> str:
        return f"RowColumns({self.names!r}, {len(self)} rows, plain={self.plain})"


_PLAIN_CELLS = frozenset({int, type(None)})
_PLAIN_OR_TEXT_CELLS = _PLAIN_CELLS | {str}


def _plain_text(texts: Iterable[str]) -> bool:
    """True when all the text is printable ASCII without ``"`` or ``\\``."""
    # One check of all the text at once: each holds for the whole exactly when for every part.
    text = "".join(texts)
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def _plain_column(column: Sequence[Any], kinds: frozenset[type]) -> bool:
    """True when every value of the column is an int, None, or plain text (see _plain_text)."""
    if kinds <= _PLAIN_CELLS:
        return True
    if not kinds <= _PLAIN_OR_TEXT_CELLS:
        return False
    # Each distinct text once: a day's timestamp column holds under 300 of them.
    texts = set(column) if kinds == {str} else {value for value in column if type(value) is str}
    return _plain_text(texts)


def represent_rows(
    rows: Iterable[Sequence[Any]], names: list[str], converters: list[tuple[int, Memo]]
) -> RowColumns:
    """The rows with each listed column replaced by its converter's result."""
    return represent_columns(list(zip(*rows, strict=True)), names, converters)


def represent_columns(
    values: Sequence[Sequence[Any]], names: list[str], converters: list[tuple[int, Memo]]
) -> RowColumns:
    """The columns (each a sequence of one column's values), the listed ones converted.

    Each converter runs once per distinct value not yet in its memo (memos may be
    shared by columns of one kind), then a lookup per cell.
    """
    columns = list(values)
    if not columns:
        return RowColumns(names, [])
    if len(columns) != len(names):  # the columns would be misnamed
        raise ValueError(f"{len(names)} names for rows of {len(columns)} values")
    for index, memo in converters:
        column = columns[index]
        try:
            fresh = set(column).difference(memo.seen)
        except TypeError:  # unhashable values, e.g. decoded JSON objects
            columns[index] = list(map(memo.function, column))
            continue
        memo.seen.update({value: memo.function(value) for value in fresh})
        columns[index] = list(map(memo.seen.__getitem__, column))
    return RowColumns(names, columns)


def represent_values(
    values: Iterable[Sequence[Any]], plan: RepresentationPlan
) -> list[dict[str, Any]]:
    """The serializer's output from tuples already converted by the ORM (``values_list``)."""
    shared: dict[str, Memo] = {}
    converters = []
    for index, column_field in enumerate(plan.fields):
        if column_field is not None:
            key = _field_signature(column_field)
            if key not in shared:
                shared[key] = Memo(_represent(column_field))
            converters.append((index, shared[key]))
    return list(represent_rows(values, plan.names, converters))


class StoredText(Func):
    """A column read as the text the database stores it as.

    SQLite stores timestamps as text, and the sqlite3 module parses every cell of a
    column declared ``datetime`` in Python (Django registers that converter) before the
    ORM's own converter runs; a cast hides the declared type. :func:`represent_queryset`
    then runs that parse (:func:`parse_stored_datetime`) and the ORM's converter once
    per distinct value.
    """

    template = "CAST(%(expressions)s AS text)"


def parse_stored_datetime(value: Any, expression: Any, connection: Any) -> Any:
    """What the sqlite3 converter Django registers for ``datetime`` columns does to a cell.

    Text it cannot read (an empty or garbled cell) becomes None, as it did before the
    cast; the ORM's converter alone would fail on it.
    """
    return None if value is None else parse_datetime(value)


def selected_columns(queryset: QuerySet[Any], plan: RepresentationPlan) -> list[str | Func]:
    """What to select for ``plan``: its columns, on SQLite timestamps as their stored text."""
    if connections[queryset.db].vendor != "sqlite":
        return list(plan.sources)
    selected: list[str | Func] = []
    for source in plan.sources:
        model_field = queryset.model._meta.get_field(source)
        if model_field.get_internal_type() == "DateTimeField":
            selected.append(StoredText(source, output_field=model_field))
        else:
            selected.append(source)
    return selected


def row_values(queryset: QuerySet[Any], plan: RepresentationPlan) -> QuerySet[Any]:
    """The query of ``plan``'s columns that :func:`represent_queryset` reads.

    Not for iterating with the ORM: on SQLite its timestamps are text that the ORM's
    converter alone cannot always read (see :func:`parse_stored_datetime`).
    """
    return queryset.values_list(*selected_columns(queryset, plan))


def represent_queryset(values: QuerySet[Any], plan: RepresentationPlan) -> RowColumns:
    """The serializer's output straight from the database's raw rows of ``row_values()``.

    What the ORM would do to each value (the backend's converters, e.g. parsing
    SQLite's timestamp text) and what the serializer field would do after it are
    done once per distinct raw value and column kind, in the same order.
    """
    compiler = values.query.get_compiler(using=values.db)
    columns = _fetch_columns(compiler)
    expressions = [selected[0] for selected in compiler.select[: compiler.col_count]]
    database_converters = compiler.get_converters(expressions)
    connection = compiler.connection
    shared: dict[tuple[Any, ...], Memo] = {}
    converters = []
    for index, column_field in enumerate(plan.fields):
        steps, expression = database_converters.get(index, ([], None))
        if isinstance(expression, StoredText):
            steps = [parse_stored_datetime, *steps]
        if not steps and column_field is None:
            continue
        key = (
            tuple(steps),
            _model_field_signature(expression.output_field) if expression is not None else None,
            _field_signature(column_field) if column_field is not None else None,
        )
        if key not in shared:
            shared[key] = Memo(column_converter(steps, expression, connection, column_field))
        converters.append((index, shared[key]))
    return represent_columns(columns, plan.names, converters)


def _fetch_columns(compiler: Any) -> list[list[Any]]:
    """Every row of the compiler's query, as one list per selected column.

    Rows are fetched and turned into columns a few hundred at a time, so that the
    row tuples are freed as they come. With one fetchall of a day's 936 rows, their
    tuples alone started a garbage collection in most requests; now it runs in about
    one request in three (about 0.2 ms less per request on SQLite).
    """
    cursor = compiler.execute_sql(CURSOR)
    if cursor is None:  # a filter that matches nothing by construction
        return []
    columns: list[list[Any]] = [[] for _ in range(compiler.col_count)]
    try:
        # Columns added for ordering (has_extra_select) come last; zip() leaves them out.
        while rows := cursor.fetchmany(_FETCH_ROWS):
            for column, values in zip(columns, zip(*rows, strict=True), strict=False):
                column.extend(values)
    finally:
        cursor.close()
    return columns if columns[0] else []


def column_converter(
    steps: list[Callable[..., Any]],
    expression: Any,
    connection: Any,
    field: serializers.Field[Any, Any, Any, Any] | None,
) -> Convert:
    """Raw database value to the field's representation: the ORM's steps, then the field."""
    represent = _represent(field) if field is not None else None

    def convert(value: Any) -> Any:
        for step in steps:
            value = step(value, expression, connection)
        return value if represent is None else represent(value)

    return _utc_timestamp_shortcut(steps, connection, field, convert) or convert


def _utc_timestamp_shortcut(
    steps: list[Callable[..., Any]],
    connection: Any,
    field: serializers.Field[Any, Any, Any, Any] | None,
    convert: Convert,
) -> Convert | None:
    """The same text as ``convert`` for the usual case, about twenty times faster.

    When the database hands back naive UTC datetimes (or, on SQLite, their stored
    text, which ``parse_datetime`` reads with ``datetime.fromisoformat`` first), the ORM only
    makes them aware in UTC, and DRF's ISO 8601 output in UTC is then ``isoformat()``
    with ``Z``. Any other setting (another time zone or format, another field) or
    value (text with an offset, or that ``fromisoformat`` refuses) keeps ``convert``.
    """
    if type(field) is not serializers.DateTimeField or hasattr(field, "timezone"):
        return None
    output_format = getattr(field, "format", api_settings.DATETIME_FORMAT)
    if output_format is None or output_format.lower() != ISO_8601:
        return None
    if not (settings.USE_TZ and connection.timezone_name == "UTC"):
        return None
    if timezone.get_current_timezone_name() != "UTC":
        return None
    usual = [connection.ops.convert_datetimefield_value]
    if steps not in (usual, [parse_stored_datetime, *usual]):
        return None

    def shortcut(value: Any) -> Any:
        if type(value) is str:
            try:
                moment = datetime.fromisoformat(value)  # what the ORM's parse_datetime tries first
            except ValueError:
                return convert(value)
            return moment.isoformat() + "Z" if moment.tzinfo is None else convert(value)
        if type(value) is datetime and value.tzinfo is None:
            return value.isoformat() + "Z"
        return convert(value)

    return shortcut


_PLANS: dict[type[Any], RepresentationPlan | None] = {}


def cached_plan(
    serializer_class: type[serializers.ModelSerializer[Any]],
) -> RepresentationPlan | None:
    """The plan of a serializer class, built once per process (building fields is slow).

    Only for serializers whose fields do not depend on the request or context.
    """
    if serializer_class not in _PLANS:
        _PLANS[serializer_class] = representation_plan(serializer_class())
    return _PLANS[serializer_class]


class ValuesListMixin:
    """``list()`` of a ListAPIView from value tuples when its serializer allows it.

    The serializer's fields must not depend on the request (they are built once).
    """

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        plan = cached_plan(self.get_serializer_class())  # type: ignore[attr-defined]
        if plan is None:
            return super().list(request, *args, **kwargs)  # type: ignore[misc]
        queryset = self.filter_queryset(self.get_queryset())  # type: ignore[attr-defined]
        # Built only when a page is asked for (``limit``); a plain list reads row_values().
        values = SimpleLazyObject(lambda: queryset.values_list(*plan.sources))
        page = self.paginate_queryset(values)  # type: ignore[attr-defined]
        if page is None:
            rows = represent_queryset(row_values(queryset, plan), plan)
            if getattr(request.accepted_renderer, "renders_row_columns", False):
                return Response(rows)
            return Response(list(rows))  # e.g. the browsable API, which expects a list
        # A page is at most a few thousand rows: the ORM's own conversion will do.
        return self.get_paginated_response(represent_values(page, plan))  # type: ignore[attr-defined]
