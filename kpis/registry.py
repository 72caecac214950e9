"""The KPIs the service computes: one entry each, read by services and the API.

A new KPI is a new model plus one entry here (and its ranking on
``kpis.pipeline.tasks.Ranking``, what a merge of stored states gives).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kpis.models import CellUniqueUsers, KpiRow, ServiceTrafficVolume


class Ranked(Protocol):
    """Merged KPI state that can be ranked: a ``Ranking`` of stored states, or a ``Partial``."""

    def top_services(self, n: int) -> list[tuple[int, int]]: ...

    def top_cells(self, n: int) -> list[tuple[int, int]]: ...


@dataclass(frozen=True)
class KpiDefinition:
    id: int
    name: str
    model: type[KpiRow]
    rank: Callable[[Ranked, int], list[tuple[int, int]]]

    @property
    def key_field(self) -> str:
        return self.model.key_field

    @property
    def value_field(self) -> str:
        return self.model.value_field


KPIS: tuple[KpiDefinition, ...] = (
    KpiDefinition(
        1, "ServiceTrafficVolume", ServiceTrafficVolume, lambda merged, n: merged.top_services(n)
    ),
    KpiDefinition(2, "CellUniqueUsers", CellUniqueUsers, lambda merged, n: merged.top_cells(n)),
)


def kpi_get(kpi_id: int) -> KpiDefinition | None:
    """The KPI with this id, or None."""
    return next((kpi for kpi in KPIS if kpi.id == kpi_id), None)
