"""PostgreSQL access: the pool, tenant-scoped transactions, migrations and the embedded server."""

from fleet.db.database import Database

__all__ = ["Database"]
