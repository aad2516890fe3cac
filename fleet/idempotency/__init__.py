"""Idempotency-Key: a retried POST gets the first response again instead of a second effect."""
