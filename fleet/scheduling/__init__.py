"""Time-driven work run by one Fleet node at a time: leader election and the APScheduler jobs."""
