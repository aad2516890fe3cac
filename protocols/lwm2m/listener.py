"""The CoAP listener as one runnable component: socket, LwM2M server, group commit, expiry sweep."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

import aiocoap
import structlog

from fleet.alarms.service import AlarmService
from fleet.db import Database
from fleet.db.availability import database_away
from fleet.firmware import delivery
from fleet.firmware.delivery import coaps_server_uri
from fleet.registrations.models import DevicePolicy
from fleet.registrations.service import RegistrationService
from fleet.security.crypto import server_key, server_public_key_der
from fleet.security.directory import CredentialDirectory
from fleet.security.models import KnownCredential
from fleet.security.service import SecurityService
from fleet.settings import SecuritySettings
from fleet.supervision import Health, Supervisor
from fleet.alarms.evaluator import RuleEvaluator
from fleet.telemetry.service import TelemetryMaintenance, TelemetryWriter
from fleet.access.limits import Rate
from protocols.coap import secure, transport
from protocols.coap.dtls import DtlsServer
from protocols.coap.peerlimit import DEFAULT_ADDRESS_RATE, DEFAULT_PEER_RATE, PeerLimit
from fleet.commands.repository import NODE_TIMEOUT, ONLY_SLOT, Slot
from fleet.commands.service import CommandQueue
from protocols.lwm2m.bootstrap import DEFAULT_LIFETIME_S as BOOTSTRAP_LIFETIME_S
from protocols.lwm2m.bootstrap import PSK_MODE, RPK_MODE, BootstrapServer
from protocols.lwm2m.dispatcher import IN_FLIGHT, Dispatcher
from protocols.lwm2m.downlink import DeviceClient, DeviceInfoReader
from protocols.lwm2m.negotiation import ContentFormats
from protocols.lwm2m.pacing import DEFAULT_CONCURRENCY, DEFAULT_RATE_PER_S, FollowupPacer
from protocols.lwm2m.server import LwM2MServer
from protocols.lwm2m.sessions import Peer

log = structlog.get_logger("fleet.coap")

EXPIRY_GRACE = timedelta(seconds=30)
SWEEP_INTERVAL_S = 5.0
ALARM_SWEEP_INTERVAL_S = 30.0
PARTITION_MAINTENANCE_S = 3600.0
# On stopping, how long requests already taken get to be committed and answered (the REST
# API's grace is the same, api.runtime.GRACE_S).
DRAIN_GRACE_S = 5.0
# How long starting waits for the feed of registration changes before answering without it.
FOLLOW_START_S = 10.0


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class ListenerSockets:
    """UDP sockets bound already (protocols.coap.transport.bound_udp_socket), which the listener
    uses instead of binding its own: a worker of a node gets them from its supervisor (api.node)."""

    coap: socket.socket
    coaps: socket.socket | None = None


@dataclass
class Listener:
    context: aiocoap.Context
    server: LwM2MServer
    writer: TelemetryWriter
    client: DeviceClient
    dispatcher: Dispatcher
    port: int
    # The coaps listener (protocols.coap.secure) and what it looks keys up in; None: no coaps.
    coaps: secure.SecureListener | None = None
    directory: CredentialDirectory | None = None
    bootstrap: BootstrapServer | None = None
    # Where each Register's and Update's follow-up waits for its budget.
    pacer: FollowupPacer | None = None

    @property
    def coaps_port(self) -> int | None:
        return self.coaps.port if self.coaps is not None else None


@contextlib.asynccontextmanager
async def open_listener(db: Database, host: str, port: int, *, node: str | None = None,
                        expiry_grace: timedelta = EXPIRY_GRACE,
                        sweep_interval_s: float = SWEEP_INTERVAL_S,
                        in_flight: int = IN_FLIGHT,
                        peer_rate: Rate = DEFAULT_PEER_RATE,
                        address_rate: Rate = DEFAULT_ADDRESS_RATE,
                        health: Health | None = None,
                        alarm_service: AlarmService | None = None,
                        rules: RuleEvaluator | None = None,
                        alarm_sweep_interval_s: float = ALARM_SWEEP_INTERVAL_S,
                        coaps_port: int | None = None, security: SecuritySettings | None = None,
                        coaps_public_uri: str | None = None, coaps_limits: dict | None = None,
                        bootstrap_lifetime_s: int = BOOTSTRAP_LIFETIME_S,
                        sockets: ListenerSockets | None = None, node_timeout: timedelta = NODE_TIMEOUT,
                        slot: Slot = ONLY_SLOT, followups_per_s: float = DEFAULT_RATE_PER_S,
                        followups_in_flight: int = DEFAULT_CONCURRENCY,
                        resume: bool = False) -> AsyncIterator[Listener]:
    """`rules` judges every committed batch of points against the alarm rules; `alarm_service`
    keeps the alarms of devices that go offline and come back (one per node, shared with the rules).

    `coaps_port` (None: none; 0: any free port) opens CoAP over DTLS beside the plain port, with
    the device keys of `security` (FLEET_CREDENTIALS_KEY); the same LwM2M server answers both,
    and the bootstrap server (POST /bs) writes `coaps_public_uri` (else this host and coaps port).
    `coaps_limits` go to its DTLS server (protocols.coap.secure.open_coaps). With `sockets`, the
    listener serves on them (host and port only name it); its coaps socket, when given, is used
    when coaps is on. After `node_timeout` without a heartbeat another node's devices are taken
    over (FLEET_NODE_TIMEOUT_S): those its `slot` hears, in a node of several listener processes
    (protocols.coap.steering).

    What follows each Register and Update (the /3/0 read, re-observing, the device's commands)
    starts at most `followups_per_s` a second (0: unpaced), `followups_in_flight` at once: this
    listener's share of the node's FLEET_REGISTRATION_FOLLOWUPS (protocols.lwm2m.pacing)."""
    transport.install()
    node = node or node_name()
    health = health or Health()
    maintenance = TelemetryMaintenance(db)
    await maintenance.run()
    writer = TelemetryWriter(db, health=health, on_committed=rules.committed if rules else None)
    alarm_service = alarm_service or AlarmService(db)
    registrations = RegistrationService(db, node, alarm_service=alarm_service)
    downloads = delivery.downloads(db)
    server = LwM2MServer(registrations, writer, downloads=downloads)
    with transport.inherited(sockets.coap if sockets is not None else None):
        context = await aiocoap.Context.create_server_context(server, bind=(host, port), transports=["udp6"])
    transport.enlarge_receive_buffer(context)
    if peer_rate.enabled or address_rate.enabled:
        transport.limit_peers(context, PeerLimit(peer_rate, address_rate))
    supervisor = Supervisor(health)
    directory = coaps = None
    if coaps_port is not None and (security is None or security.credentials_key is None):
        log.warning("no coaps listener: FLEET_CREDENTIALS_KEY is not set (devices' keys are encrypted under it)")
    elif coaps_port is not None:
        try:
            # The plain port's peer limits hold there too (open_coaps).
            directory, coaps = await _open_coaps(db, context, host, coaps_port, security, supervisor,
                                                   coaps_limits or {}, sockets.coaps if sockets else None)
        except BaseException:
            # Its port taken, say: what was opened so far closes with the error.
            await supervisor.stop()
            await context.shutdown()
            await writer.close()
            raise
    client = DeviceClient(context, ContentFormats(registrations),
                          secure_interface=coaps.interface if coaps is not None else None)
    if coaps is not None:
        credentials = SecurityService(db, security)
        server.activate = functools.partial(_activate, credentials, coaps)
        server.secure_device_of = functools.partial(_device_of, coaps.server)
        # Also on the plain port, for the devices of cities that take NoSec ones.
        server.bootstrap = BootstrapServer(
            registrations, client, functools.partial(_issue_account, credentials),
            server_uri=coaps_server_uri(coaps_public_uri, host, coaps.port),
            server_public_key=server_public_key_der(security), lifetime_s=bootstrap_lifetime_s)
    dispatcher = Dispatcher(db, CommandQueue(db, node, node_timeout=node_timeout, slot=slot), client, server,
                            concurrency=in_flight, health=health, downloads=downloads, resume=resume)
    info_reader = DeviceInfoReader(client, registrations, server.store)

    async def follow_up(followup) -> None:
        await info_reader(followup.registration, followup.session, update=followup.update)
        await dispatcher.device_awake(followup.registration, followup.session, update=followup.update)

    pacer = FollowupPacer(follow_up, rate_per_s=followups_per_s, concurrency=followups_in_flight, health=health)
    server.on_registered = pacer.submit
    server.sessions.on_ended = _coalesced(dispatcher.end_observations)
    bound_port = transport.udp_sockets(context)[0].getsockname()[1]
    following = asyncio.Event()

    def set_following(now_following: bool) -> None:
        server.sessions.set_following(now_following)
        if now_following:
            following.set()

    supervisor.start("session-follower", lambda: registrations.follow_sessions(server.sessions.apply,
                                                                               set_following))
    supervisor.start("registration-sweep", lambda: _every(
        sweep_interval_s, health, lambda: _expire(registrations, server, expiry_grace)))
    # Alarms absent long enough clear, and devices offline past their grace raise device_offline,
    # though no finding arrives; every node runs it, one at a time sweeps (an advisory lock).
    supervisor.start("alarm-sweep", lambda: _every(alarm_sweep_interval_s, health, alarm_service.sweep))
    supervisor.start("command-dispatcher", dispatcher.run)
    supervisor.start("partition-maintenance", lambda: _maintain_partitions(maintenance, PARTITION_MAINTENANCE_S))
    if rules is not None:
        supervisor.start("alarm-rules", rules.run)
    try:
        with contextlib.suppress(TimeoutError):
            # Until then every Send is looked up in the database: correct, only slower.
            async with asyncio.timeout(FOLLOW_START_S):
                await following.wait()
        log.info("CoAP listener ready", host=host, port=bound_port, node=node,
                 coaps_port=coaps.port if coaps is not None else None)
        yield Listener(context, server, writer, client, dispatcher, bound_port, coaps, directory, server.bootstrap,
                       pacer)
    finally:
        # Follow-ups first: one still running after the dispatcher stopped would claim its
        # device's commands for nobody to send or release (they'd wait for the 5-minute recovery).
        await pacer.close()
        await supervisor.stop()
        await server.drain(DRAIN_GRACE_S)
        client.close()
        if server.bootstrap is not None:
            await server.bootstrap.close()
        await server.close()
        if coaps is not None:
            await coaps.close()
        await context.shutdown()
        await writer.close()


async def _open_coaps(db: Database, context: aiocoap.Context, host: str, port: int, security: SecuritySettings,
                      supervisor: Supervisor, limits: dict,
                      sock: socket.socket | None) -> tuple[CredentialDirectory, secure.SecureListener]:
    """The coaps listener on `port`, looking device keys up in a CredentialDirectory that every
    credential change reaches; a credential retired or revoked ends its DTLS sessions."""
    directory = CredentialDirectory(db, security)
    supervisor.start("credential-directory", directory.run)
    try:
        # Open with every key loaded: an empty directory would make every device's first
        # ClientHello miss and queue a lookup of its own (after a restart, all of them at once).
        async with asyncio.timeout(FOLLOW_START_S):
            await directory.loaded.wait()
    except TimeoutError:
        # Not forever: the plain port and the rest of the listener wait for this too. Until the
        # load ends, a device's first ClientHello misses and starts a lookup of its key, and its
        # retransmission finds it.
        log.warning("device keys not loaded yet (database slow?); the coaps listener opens without them "
                    "and looks each device's key up at its first handshake", waited_s=FOLLOW_START_S)
    coaps = await secure.open_coaps(context, host, port, directory, server_key(security), sock, **limits)
    directory.removal_hooks.append(functools.partial(_end_sessions, coaps))
    return directory, coaps


def _device_of(dtls: DtlsServer, peer: Peer) -> UUID | None:
    """The device whose credential the DTLS session with `peer` (host, port, True) proved."""
    host = peer[0]
    identity = dtls.identity_of((host if ":" in host else f"::ffff:{host}", peer[1]))
    return identity.credential.device_id if identity is not None else None


def _end_sessions(coaps, gone: list[KnownCredential]) -> None:
    """Credentials left the directory (retired, revoked, their devices deleted): their sessions
    end, in one pass over the sessions however many left at once."""
    coaps.server.forget_credential(_any_of({credential.credential_id for credential in gone}))


def _any_of(credential_ids: set[UUID]) -> Callable[[object], bool]:
    """Whether a session's credential (a KnownCredential) is one of these: compared by id, since
    the session holds the credential as it was at its handshake (pending, say, since made active)."""
    return lambda known: getattr(known, "credential_id", None) in credential_ids


async def _issue_account(credentials: SecurityService, policy: DevicePolicy) -> tuple[int, bytes, bytes]:
    """A PSK where the city takes them (the cheap handshake), else a key pair."""
    if "psk" in policy.security_modes:
        issued = await credentials.issue_operational_psk(policy.tenant_id, policy.device_id)
        return PSK_MODE, issued.identity.encode(), issued.key
    pair = await credentials.issue_operational_rpk(policy.tenant_id, policy.device_id)
    return RPK_MODE, pair.public_key_der, pair.private_key_der


async def _activate(credentials: SecurityService, coaps, credential: KnownCredential) -> None:
    """A device's first Register with its pending credential: active from now on; the one it
    replaces is retired, and its DTLS sessions on this node end now (other nodes' when their
    directory hears of it)."""
    activation = await credentials.activate(credential)
    if activation is None or not activation.retired:
        return
    retired = set(activation.retired)
    closed = coaps.server.forget_credential(_any_of(retired))
    log.info("device credential activated", endpoint=credential.endpoint, retired=len(retired),
             sessions_closed=closed)


def _coalesced(end_observations: Callable[[set[UUID]], None]) -> Callable[[set[UUID]], None]:
    """One call per turn of the event loop: a sweep ends a thousand registrations at once, one
    notification each, and every call walks all the observations this node follows."""
    waiting: set[UUID] = set()

    def flush() -> None:
        devices = set(waiting)
        waiting.clear()
        end_observations(devices)

    def ended(device_ids: set[UUID]) -> None:
        if not waiting:
            asyncio.get_running_loop().call_soon(flush)
        waiting.update(device_ids)

    return ended


async def _every(interval_s: float, health: Health, job: Callable[[], Awaitable[object]]) -> None:
    """Run `job` now and then every `interval_s`. The database away is news for /readyz and the
    next tick retries; anything else is our bug: the supervisor logs it once and restarts this."""
    while True:
        try:
            await job()
        except Exception as exc:
            if not database_away(exc):
                raise
            health.database_lost(exc)
        await asyncio.sleep(interval_s)


async def _expire(registrations: RegistrationService, server: LwM2MServer, grace: timedelta) -> None:
    """Lifetimes are stored as expiry times, so this is correct across restarts and nodes."""
    expired = await registrations.expire(grace)
    # Every listener hears of it (SESSIONS_CHANNEL); this one need not wait for that.
    server.sessions.forget_devices(expired)


async def _maintain_partitions(maintenance: TelemetryMaintenance, interval_s: float) -> None:
    """Daily partitions ahead, retention behind; idempotent, so every node may run it."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await maintenance.run()
        except Exception as exc:  # noqa: BLE001 - retried on the next tick; days of partitions are ahead
            if not database_away(exc):
                log.exception("telemetry partition maintenance failed")


async def run_coap(db: Database, host: str, port: int, *, in_flight: int = IN_FLIGHT,
                   peer_rate: Rate = DEFAULT_PEER_RATE, address_rate: Rate = DEFAULT_ADDRESS_RATE,
                   health: Health | None = None, alarm_service: AlarmService | None = None,
                   rules: RuleEvaluator | None = None, coaps_port: int | None = None,
                   security: SecuritySettings | None = None, coaps_public_uri: str | None = None,
                   coaps_limits: dict | None = None, node: str | None = None,
                   sockets: ListenerSockets | None = None, resume: bool = False,
                   node_timeout: timedelta = NODE_TIMEOUT, slot: Slot = ONLY_SLOT,
                   followups_per_s: float = DEFAULT_RATE_PER_S) -> None:
    """The listener until cancelled. `resume`: this node's name was a process's before (a
    node's worker restarted in its slot), whose commands under way and observations this one
    takes over at once (Dispatcher.resume)."""
    async with open_listener(db, host, port, in_flight=in_flight, peer_rate=peer_rate,
                             address_rate=address_rate, health=health, alarm_service=alarm_service,
                             rules=rules, coaps_port=coaps_port, security=security,
                             coaps_public_uri=coaps_public_uri, coaps_limits=coaps_limits,
                             node=node, sockets=sockets, node_timeout=node_timeout,
                             slot=slot, followups_per_s=followups_per_s, resume=resume):
        await asyncio.Event().wait()
