"""Maintenance windows: which apply to a device, and when they are open (local time)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from fleet.campaigns.models import Window
from fleet.campaigns.windows import OpenHours, applicable, campaign_hours, is_open, open_for

NIGHT = OpenHours(dt.time(1), dt.time(5))
LATE = OpenHours(dt.time(22), dt.time(4))  # crosses midnight
SEOUL = "Asia/Seoul"


def seoul(day: int, hour: int, minute: int = 0) -> dt.datetime:
    # December 2026: the 7th is a Monday.
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=ZoneInfo(SEOUL))


def test_a_window_is_open_from_its_start_until_just_before_its_end():
    assert not is_open([NIGHT], seoul(7, 0, 59), SEOUL)
    assert is_open([NIGHT], seoul(7, 1), SEOUL)
    assert is_open([NIGHT], seoul(7, 4, 59), SEOUL)
    assert not is_open([NIGHT], seoul(7, 5), SEOUL)
    assert not is_open([NIGHT], seoul(7, 12), SEOUL)


def test_a_window_crossing_midnight_is_open_on_both_sides():
    assert is_open([LATE], seoul(7, 23), SEOUL)
    assert is_open([LATE], seoul(8, 3), SEOUL)
    assert not is_open([LATE], seoul(8, 4), SEOUL)
    assert not is_open([LATE], seoul(8, 21), SEOUL)


def test_weekdays_count_where_the_window_opened():
    sundays = OpenHours(dt.time(22), dt.time(4), (7,))
    assert is_open([sundays], seoul(6, 23), SEOUL)      # Sunday night
    assert is_open([sundays], seoul(7, 2), SEOUL)       # Monday early: Sunday's window
    assert not is_open([sundays], seoul(7, 23), SEOUL)  # Monday night
    mondays = OpenHours(dt.time(1), dt.time(5), (1,))
    assert is_open([mondays], seoul(7, 2), SEOUL) and not is_open([mondays], seoul(8, 2), SEOUL)


def test_local_time_is_the_citys():
    utc_17 = dt.datetime(2026, 12, 6, 17, tzinfo=dt.UTC)  # 02:00 in Seoul
    assert is_open([NIGHT], utc_17, SEOUL)
    assert not is_open([NIGHT], utc_17, "Europe/Berlin")  # 18:00 there


def test_no_window_at_all_means_any_time():
    assert is_open([], seoul(7, 12), SEOUL)


def test_the_campaigns_window_then_the_groups_then_the_citys():
    own = campaign_hours(Window(start="02:00", end="03:00"))
    assert applicable(own, [LATE], [NIGHT]) == (own,)
    assert applicable(None, [LATE], [NIGHT]) == [LATE]
    assert applicable(None, [], [NIGHT]) == [NIGHT]
    assert applicable(None, [], []) == []
    assert campaign_hours(None) is None


def test_how_long_a_window_stays_open():
    assert LATE.closes_in(seoul(7, 23, 30)) == dt.timedelta(hours=4, minutes=30)
    assert LATE.closes_in(seoul(8, 3)) == dt.timedelta(hours=1)
    assert LATE.closes_in(seoul(8, 12)) is None
    utc = seoul(7, 23, 30).astimezone(dt.UTC)
    assert open_for([], utc, SEOUL) is None
    assert open_for([LATE, OpenHours(dt.time(23), dt.time(23, 45))], utc, SEOUL) == dt.timedelta(hours=4, minutes=30)
    assert open_for([NIGHT], utc, SEOUL) is False
    # Across a daylight saving change it closes after the real time left, not the wall clock's.
    spring = dt.datetime(2027, 3, 28, 1, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # 02:00 jumps to 03:00
    assert OpenHours(dt.time(1), dt.time(4)).closes_in(spring) == dt.timedelta(hours=1, minutes=30)
