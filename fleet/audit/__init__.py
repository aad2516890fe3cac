"""The append-only record of every mutation: who, what, before and after."""
