"""CSV for analysts: the same rows, columns and order as the JSON, one line per row."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

from rest_framework.renderers import BaseRenderer


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


class CsvRenderer(BaseRenderer):
    """Render a list of rows (or the ``results`` of a page) with a header row."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        # A page's rows, or a single object (an OPTIONS description) as one row.
        rows = data.get("results", [data]) if isinstance(data, Mapping) else data
        columns = self._columns(rows, renderer_context or {})
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(column)) for column in columns])
        return buffer.getvalue().encode(self.charset)

    @staticmethod
    def _columns(rows: list[Mapping[str, Any]], renderer_context: Mapping[str, Any]) -> list[str]:
        if rows:
            return list(rows[0])
        # No rows: the header still names the columns, taken from the serializer.
        view = renderer_context.get("view")
        if view is not None and hasattr(view, "get_serializer"):
            return list(view.get_serializer().fields)
        return []
