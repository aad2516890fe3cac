"""One worker process of a node (`python -m api.worker`, started by api.node): the device edge or the HTTP API, on sockets its supervisor bound."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass

import structlog

from api.node import (COAP_WORKERS_ENV, FDS_ENV, METRICS_SOCKET_ENV, NODE_ENV, SCHEDULER_ENV, SUPERVISOR_PID_ENV,
                      WORKER_ENV, coap_nice)
from fleet.db.reach import DatabaseUnreachable
from fleet.logging import configure_logging
from fleet.settings import Settings, load_settings

log = structlog.get_logger(__name__)

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerRole:
    """Who this worker is, as its supervisor said in the environment."""

    name: str               # coap-1, http-2, ...
    node: str               # the node's name (host:supervisor pid)
    fds: dict[str, int | None]
    scheduler: bool         # the node's scheduler runs here (http-1, else coap-1)
    metrics_socket: str     # where its /metrics is served, for the supervisor to merge

    @property
    def kind(self) -> str:
        return self.name.partition("-")[0]

    @property
    def node_name(self) -> str:
        """Its name as a node of the cluster (registrations, heartbeats, leadership): the same
        for every process of this slot, so a restarted one owns its slot's devices at once."""
        return f"{self.node}/{self.name}"

    @property
    def slot(self) -> tuple[int, int]:
        """A coap worker's slot among the port's sockets, and how many there are: the devices
        whose datagrams reach it are those of source port % slots = slot (protocols.coap.steering)."""
        return int(self.name.partition("-")[2]) - 1, int(os.environ.get(COAP_WORKERS_ENV, "1"))

    @classmethod
    def from_environment(cls, environ=os.environ) -> WorkerRole:
        return cls(environ[WORKER_ENV], environ[NODE_ENV], json.loads(environ[FDS_ENV]),
                   environ.get(SCHEDULER_ENV) == "1", environ[METRICS_SOCKET_ENV])


def die_with_supervisor(supervisor_pid: int) -> None:
    """SIGTERM this process when its supervisor dies, killed or crashed: it drains, and no
    worker is left running a node nobody supervises (Linux; elsewhere nothing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # It died before the line above: this process was handed to another (init, a subreaper).
    # Not "the parent is 1": in a container the supervisor is process 1 itself.
    if os.getppid() != supervisor_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def uvloop_wanted(role: WorkerRole) -> bool:
    """HTTP workers run on uvloop (FLEET_UVLOOP=0 turns it off): uvicorn, Litestar and asyncpg
    are made for it; the device edge stays on asyncio, whose selector transport aiocoap and
    Fleet's patched UDP reader (protocols.coap.transport) build on."""
    return role.kind == "http" and os.environ.get("FLEET_UVLOOP", "1") != "0"


async def run_worker(settings: Settings, role: WorkerRole) -> int:
    from api.commands import scheduler
    from api.metrics import worker_metrics
    from api.runtime import open_database, run_device_edge, run_http, until_stopped
    from fleet.supervision import Health
    from protocols.lwm2m.listener import ListenerSockets

    health = Health()  # what this worker's /readyz reports
    components = []
    async with open_database(settings, run_migrations=False, health=health) as db, \
            worker_metrics(db, role.metrics_socket, city=role.scheduler).serving():
        if role.kind == "coap":
            coaps = role.fds.get("coaps")
            sockets = ListenerSockets(socket.socket(fileno=role.fds["coap"]),
                                      socket.socket(fileno=coaps) if coaps is not None else None)
            components.append(lambda: run_device_edge(db, settings, health, node=role.node_name, sockets=sockets,
                                                      resume=True, slot=role.slot))
        else:
            listening = socket.socket(fileno=role.fds["http"])
            components.append(lambda: run_http(db, settings, settings.http.host, settings.http.port, health,
                                               listening))
        if role.scheduler:
            components.append(lambda: scheduler(db, settings, health, node=role.node_name))
        log.info("worker running", node=role.node_name, pid=os.getpid(), scheduler=role.scheduler)
        return await until_stopped(*components)


def main() -> int:
    die_with_supervisor(int(os.environ[SUPERVISOR_PID_ENV]))
    role = WorkerRole.from_environment()
    settings = load_settings()
    configure_logging(settings.log)
    if role.kind == "coap":
        os.nice(coap_nice())
    # The server's modules first: tune_gc freezes what exists.
    import api.app  # noqa: F401
    import api.commands  # noqa: F401
    from api.runtime import tune_gc

    tune_gc()
    loop_factory = None
    if uvloop_wanted(role):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            return runner.run(run_worker(settings, role))
        except DatabaseUnreachable as exc:
            # One line, not a traceback: the supervisor starts it again after a back-off.
            log.error("worker cannot reach the database", worker=role.name, error=str(exc))
            return 1


if __name__ == "__main__":
    sys.exit(main())
