"""The KPIs the service computes: one entry each, read by services and the API.

A new KPI is a new model plus one entry here (and its ranking on ``Partial``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kpis.models import CellUniqueUsers, KpiRow, ServiceTrafficVolume

if TYPE_CHECKING:  # at run time the ranking gets a Partial without importing pandas here
    from kpis.pipeline import Partial


@dataclass(frozen=True)
class KpiDefinition:
    id: int
    name: str
    model: type[KpiRow]
    rank: Callable[[Partial, int], list[tuple[int, int]]]

    @property
    def key_field(self) -> str:
        return self.model.key_field

    @property
    def value_field(self) -> str:
        return self.model.value_field


KPIS: tuple[KpiDefinition, ...] = (
    KpiDefinition(
        1, "ServiceTrafficVolume", ServiceTrafficVolume, lambda partial, n: partial.top_services(n)
    ),
    KpiDefinition(2, "CellUniqueUsers", CellUniqueUsers, lambda partial, n: partial.top_cells(n)),
)


def kpi_get(kpi_id: int) -> KpiDefinition | None:
    """The KPI with this id, or None."""
    return next((kpi for kpi in KPIS if kpi.id == kpi_id), None)
