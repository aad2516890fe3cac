"""Events as people watch them: alarms, work orders, device status and command outcomes."""

from __future__ import annotations

import re
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
# Firmware: a campaign's status or progress changed (payload: the campaign with its counts), and
# one device's state in it changed (payload: campaign_id, device_id, state, reason).
CAMPAIGN_UPDATED = "campaign.updated"
CAMPAIGN_DEVICE_UPDATED = "campaign.device_updated"
# Waste collection: a route's status or progress changed (payload: the route with its progress,
# no stops), one of its stops was marked (payload: route_id, crew_id, the stop), and the evening's
# automation built (or failed to build) a city's plan for tomorrow (payload: plan_id, date, status, error),
# and any plan became ready, failed or superseded (payload: plan_id, date, waste_kind, status, source,
# replaces_id, error, and replaced_by when superseded).
ROUTE_UPDATED = "route.updated"
ROUTE_STOP_UPDATED = "route.stop_updated"
PLAN_SCHEDULED = "plan.scheduled"
PLAN_UPDATED = "plan.updated"


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
        """Raises ValueError on anything but two non-negative integers joined by '-' that fit
        the log's columns (xid8 below 2**63 in practice, bigint ids)."""
        xid, sep, event_id = token.strip().partition("-")
        if (not sep or len(token) > 60 or not (xid.isascii() and xid.isdigit())
                or not (event_id.isascii() and event_id.isdigit())
                or int(xid) >= 2**63 or int(event_id) >= 2**63):
            raise ValueError(f"not a position in the event log: {token[:60]!r}")
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


_KIND_OR_SUBJECT = re.compile(r"[a-z_]{1,40}(\.[a-z_]{1,40})?")


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which kinds a listener wants: exact kinds (`alarm.raised`) and whole subjects (`alarm`)."""

    kinds: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str | None) -> EventFilter:
        """`alarm.raised,work_order` → that kind and every work order event; empty: everything.
        Raises ValueError on a name that is neither."""
        names = [name.strip() for name in (text or "").split(",") if name.strip()]
        if len(names) > 50 or any(not _KIND_OR_SUBJECT.fullmatch(name) for name in names):
            raise ValueError("give event kinds (alarm.raised) or subjects (alarm, work_order, device, "
                             "command), comma-separated")
        return cls(frozenset(n for n in names if "." in n), frozenset(n for n in names if "." not in n))

    def wants(self, kind: str) -> bool:
        if not self.kinds and not self.subjects:
            return True
        return kind in self.kinds or kind.partition(".")[0] in self.subjects


# What a live stream yields besides events.
@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Nothing happened for a while: a line that keeps proxies from closing the connection."""


@dataclass(frozen=True, slots=True)
class Passed:
    """Events up to `position` were read and none of them is wanted: a resuming listener may
    start after it (an SSE `id:` alone, which moves the client's Last-Event-ID)."""

    position: Position


@dataclass(frozen=True, slots=True)
class Opening:
    """Where a stream starts; `reset` says why it cannot continue seamlessly from what the
    listener asked for: 'pruned' (retention deleted events after it) or 'unknown' (a position
    this database never gave out; the stream starts from now)."""

    position: Position
    reset: str | None = None
