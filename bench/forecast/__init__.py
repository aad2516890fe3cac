"""Fill-forecast accuracy on simulated weeks: Fleet's forecast against the naive one."""
