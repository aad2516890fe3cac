"""Street lighting: dimming programs, calendars and overrides, and the level they yield over time."""
