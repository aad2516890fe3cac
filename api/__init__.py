"""The REST adapter: a Litestar app exposing Fleet's services under /api/v1."""
