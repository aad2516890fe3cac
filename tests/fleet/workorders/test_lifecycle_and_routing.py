"""Pure rules: deadlines in the city's timezone, If-Match, transitions, and the driving order."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

import pytest

from fleet.errors import Conflict, PreconditionFailed, PreconditionRequired
from fleet.workorders.attachments import image_type
from fleet.workorders.lifecycle import changes_for, due_by, parse_if_match
from fleet.workorders.models import DueHours, WorkOrder, WorkOrderLocation, WorkOrderUpdate
from fleet.workorders.routing import driving_order, path_length

NOW = datetime(2026, 12, 6, 23, 30, tzinfo=UTC)  # 08:30 on the 7th in Seoul


def test_deadlines_in_hours_and_to_the_end_of_a_local_day():
    assert due_by(NOW, "urgent", DueHours(), "Asia/Seoul") == datetime(2026, 12, 7, 3, 30, tzinfo=UTC)
    # One day: to the end of the 8th in Seoul, i.e. 15:00 UTC on the 8th.
    assert due_by(NOW, "high", DueHours(), "Asia/Seoul") == datetime(2026, 12, 8, 15, 0, tzinfo=UTC)
    assert due_by(NOW, "low", DueHours(), "Europe/Lisbon") == datetime(2026, 12, 14, 0, 0, tzinfo=UTC)


def test_if_match_forms():
    parse_if_match('"3"', 3)
    parse_if_match('W/"3"', 3)
    parse_if_match("3", 3)
    with pytest.raises(PreconditionRequired):
        parse_if_match(None, 3)
    for stale in ('"2"', "three"):
        with pytest.raises(PreconditionFailed) as failed:
            parse_if_match(stale, 3)
        assert failed.value.current_version == 3


def order(status: str, crew=None) -> WorkOrder:
    return WorkOrder(id=None, type="repair_lamp", priority="high", status=status, source="operator", device_ids=[],
                     location=WorkOrderLocation(37.5, 127.0), notes="", created_by="t", created_at=NOW,
                     updated_at=NOW, version=1, crew_id=crew)


def test_transitions():
    assert changes_for(order("new"), WorkOrderUpdate(crew_id="c"), NOW) == {"crew_id": "c", "status": "assigned"}
    assert changes_for(order("assigned", "c"), WorkOrderUpdate(crew_id=None), NOW) == {"crew_id": None, "status": "new"}
    assert changes_for(order("in_progress", "c"), WorkOrderUpdate(status="done"), NOW) == {
        "status": "done", "closed_at": NOW}
    for status, target in (("new", "in_progress"), ("done", "assigned"), ("cancelled", "new"), ("done", "verified")):
        with pytest.raises(Conflict):
            changes_for(order(status, "c"), WorkOrderUpdate(status=target), NOW)


def test_images_by_their_bytes():
    assert image_type(b"\xff\xd8\xff\xdb") == "image/jpeg"
    assert image_type(b"RIFF\0\0\0\0WEBPVP8L") == "image/webp"
    assert image_type(b"RIFF\0\0\0\0WAVEfmt ") is None
    assert image_type(b"<svg") is None


def test_driving_order_is_close_to_the_best():
    rng = random.Random(12)
    start = (37.5, 127.0)
    for _ in range(20):
        stops = [(37.5 + rng.uniform(-0.05, 0.05), 127.0 + rng.uniform(-0.05, 0.05)) for _ in range(7)]
        found = path_length(start, stops, driving_order(start, stops))
        best = min(path_length(start, stops, p) for p in itertools.permutations(range(7)))
        assert found <= best * 1.1
    assert driving_order(None, [(0, 0)]) == [0] and driving_order(start, []) == []
