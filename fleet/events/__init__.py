"""The city's event log: what changed, in commit order, for live streams and tablets' sync."""
