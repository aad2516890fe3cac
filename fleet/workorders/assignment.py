"""Who a new work order goes to when the city asks for the nearest crew.

The crew's place is the position its tablet last reported while that is fresher than the city's
`crew_position_fresh_minutes`, else its home base; crews with neither are passed over. Chosen in
the creating transaction, so it happens once with the work order, on whichever node creates it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from fleet.alarms.models import AlarmType
from fleet.workorders.models import CREW_OPEN, AssignName, WorkOrderRules
from fleet.workorders.repository import WorkOrderRepository


async def nearest_crew(repo: WorkOrderRepository, tenant_id: UUID, location: tuple[float, float],
                       rules: WorkOrderRules, now: datetime) -> UUID | None:
    """The crew nearest to `location`; None when no crew has a position or a home base."""
    fresh_since = now - timedelta(minutes=rules.crew_position_fresh_minutes)
    return await repo.nearest_crew(tenant_id, location[0], location[1], fresh_since, sorted(CREW_OPEN))


def for_citizen_reports(rules: WorkOrderRules) -> AssignName:
    """A citizen's report goes to the nearest crew when any of the city's rules for
    `citizen_report` alarms says so; otherwise it waits unassigned for the control room."""
    wants_nearest = any(AlarmType.CITIZEN_REPORT in rule.alarm_types and rule.assign == "nearest_crew"
                        for rule in rules.alarm_rules)
    return "nearest_crew" if wants_nearest else "none"
