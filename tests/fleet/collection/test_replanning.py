"""The pure parts of re-planning: where on the solver's time axis (wall-clock seconds from the
plan's local midnight) a re-plan starts, also on a day the clocks change."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from fleet.collection.problem import at, local_midnight
from fleet.collection.problem import wall_seconds


def test_a_re_plan_starts_at_the_wall_clock_time_also_when_the_clocks_change():
    berlin = ZoneInfo("Europe/Berlin")
    midnight = local_midnight(date(2026, 3, 29), berlin)   # 02:00 becomes 03:00 that night
    now = datetime(2026, 3, 29, 6, 0, tzinfo=UTC)          # 08:00 local, 7 hours after midnight
    assert wall_seconds(now, midnight) == 8 * 3600
    assert at(midnight, wall_seconds(now, midnight)) == now
    seoul = ZoneInfo("Asia/Seoul")
    assert wall_seconds(datetime(2026, 12, 7, 0, 30, tzinfo=UTC), local_midnight(date(2026, 12, 7), seoul)) == \
        9 * 3600 + 1800
