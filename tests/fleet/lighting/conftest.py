"""Programs, calendars and helpers shared by the lighting tests; every clock in them is fixed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fleet.lighting.models import Calendar, ControlProgram, SwitchPoint

@pytest.fixture
def standard_program() -> ControlProgram:
    # The usual street profile: on after sunset, dimmed late at night, raised for the
    # morning commute, off before sunrise.
    return ControlProgram("standard", [
        SwitchPoint.at_sunset("dusk_on", 100, offset_minutes=15),
        SwitchPoint.at_local_time("late_dim", "23:00", 50),
        SwitchPoint.at_local_time("commute", "05:00", 80),
        SwitchPoint.at_sunrise("dawn_off", 0, offset_minutes=-15),
    ])


@pytest.fixture
def standard_calendar(standard_program: ControlProgram) -> Calendar:
    return Calendar("city", [standard_program], "standard")


@pytest.fixture
def calendar_of() -> Callable[[ControlProgram], Calendar]:
    def build(program: ControlProgram) -> Calendar:
        return Calendar("single", [program], program.program_id)
    return build
