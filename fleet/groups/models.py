"""Device groups and the validated input that creates or changes one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from fleet.registry.models import DeviceFilter


@dataclass(frozen=True, slots=True)
class DeviceGroup:
    id: UUID
    name: str
    description: str
    # None for a group of static members.
    filter: DeviceFilter | None
    # What the group's member listing returns without further filters: decommissioned
    # devices are not counted, as they are not listed.
    member_count: int
    created_at: datetime
    updated_at: datetime

    @property
    def is_dynamic(self) -> bool:
        return self.filter is not None


@dataclass(frozen=True, slots=True)
class NewGroup:
    """A validated group about to be created, with its initial static members if any."""

    name: str
    description: str = ""
    filter: DeviceFilter | None = None
    device_ids: tuple[UUID, ...] = ()


@dataclass(frozen=True, slots=True)
class GroupChanges:
    """A validated partial update; `filter_set` tells "set filter to None" from "leave it"."""

    name: str | None = None
    description: str | None = None
    filter: DeviceFilter | None = None
    filter_set: bool = False

    def is_empty(self) -> bool:
        return self.name is None and self.description is None and not self.filter_set

    def relative_to(self, group: DeviceGroup) -> GroupChanges:
        """These changes without those that would leave `group` as it is."""
        new_filter = self.filter_set and self.filter != group.filter
        return GroupChanges(
            name=None if self.name == group.name else self.name,
            description=None if self.description == group.description else self.description,
            filter=self.filter if new_filter else None, filter_set=new_filter)
