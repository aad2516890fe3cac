"""Distances and durations between places: the seam with two real implementations, great-circle
distance times the city's road factor (the default), and an OSRM-compatible table service when
FLEET_ROUTING_URL is set; cached per city.

Interface: `MatrixProvider.matrix(tenant_id, places) -> Matrix` (metres and seconds, integers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

from fleet.collection.models import Matrix, Place


class MatrixProvider(Protocol):
    async def matrix(self, tenant_id: UUID, places: Sequence[Place]) -> Matrix: ...
