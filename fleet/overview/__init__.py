"""The city at a glance: the control room's figures, its map by zoom and view, district outlines."""
