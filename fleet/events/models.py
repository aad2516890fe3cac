"""Events as people watch them: alarms, work orders, device status and command outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

# The kinds written today; `<subject>.<what happened>` in the past tense.
ALARM_RAISED = "alarm.raised"
ALARM_UPDATED = "alarm.updated"        # repeat, acknowledged, shelved, severity changed
ALARM_CLEARED = "alarm.cleared"
WORK_ORDER_CREATED = "work_order.created"
WORK_ORDER_UPDATED = "work_order.updated"
DEVICE_STATUS_CHANGED = "device.status_changed"
COMMAND_FINISHED = "command.finished"


@dataclass(frozen=True, slots=True)
class Position:
    """Where a reader stands in the log: after the event (xid, id).

    Written as `<xid>-<id>`: the SSE `id:` field, `Last-Event-ID` and sync tokens.
    """

    xid: int
    id: int

    def token(self) -> str:
        return f"{self.xid}-{self.id}"

    @classmethod
    def parse(cls, token: str) -> Position:
        """Raises ValueError on anything but two non-negative integers joined by '-'."""
        xid, sep, event_id = token.strip().partition("-")
        if not sep or not xid.isdigit() or not event_id.isdigit() or len(token) > 60:
            raise ValueError(f"not a position in the event log: {token!r}")
        return cls(int(xid), int(event_id))


# Before every event: a reader that starts here gets the whole retained log.
START = Position(0, 0)


@dataclass(frozen=True, slots=True)
class Event:
    tenant_id: UUID
    id: int
    xid: int
    at: datetime
    kind: str
    subject_type: str
    subject_id: str
    payload: dict[str, Any]

    @property
    def position(self) -> Position:
        return Position(self.xid, self.id)
