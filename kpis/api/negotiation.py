"""Content negotiation of the API: an unknown ``format`` is a 400 that names the parameter.

DRF's own negotiation, with one answer changed, not a speed measure: DRF answers
an unknown ``?format=`` with a 404, as if the page were missing
(``kpis/tests/api/test_api.py`` checks the 400).
"""

from __future__ import annotations

from collections.abc import Iterable

from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer


class FormatParameterNegotiation(DefaultContentNegotiation):
    """DRF answers an unknown ``?format=`` with a 404, as if the page were missing; say why."""

    def filter_renderers(
        self, renderers: Iterable[BaseRenderer], format: str
    ) -> list[BaseRenderer]:
        renderers = list(renderers)
        matching = [renderer for renderer in renderers if renderer.format == format]
        if not matching:
            known = ", ".join(renderer.format for renderer in renderers if renderer.format != "api")
            name = self.settings.URL_FORMAT_OVERRIDE or "format"
            raise ValidationError({name: [f"Must be one of: {known}."]})
        return matching
