"""Delivers queued commands to devices over CoAP and feeds their results back into Fleet.

Every node runs one. It claims due commands with FOR UPDATE SKIP LOCKED (so nodes never send
the same command twice), sends them with bounded concurrency from the listener's socket, and
records outcomes in batches. LISTEN/NOTIFY wakes it when commands arrive; a slow poll covers
missed notifications and retry times.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import structlog

from fleet.commands.models import DeviceCommand, Operation, Outcome
from fleet.commands.repository import NOTIFY_CHANNEL
from fleet.commands.service import CommandQueue
from fleet.db import Database
from fleet.db.availability import broken_connection, database_away, lost
from fleet.errors import NotFound, Unavailable
from fleet.firmware.delivery import Downloads, without_token
from fleet.metrics import DISPATCHER_IN_FLIGHT, follow
from fleet.objectmodel import Reading, ResourcePath
from fleet.telemetry.models import split_value, stored_value
from fleet.registrations.models import Registration
from fleet.registrations.repository import RegistrationRepository
from fleet.supervision import Health, Supervisor
from protocols.coap.outbound import RequestFailed
from protocols.lwm2m.downlink import DeviceAddress, DeviceClient, DeviceRequestFailed
from protocols.lwm2m.errors import CodecError
from protocols.lwm2m.linkformat import attribute_values
from protocols.lwm2m.server import LwM2MServer, Session

log = structlog.get_logger("fleet.lwm2m.dispatcher")

POLL_INTERVAL_S = 1.0
HOUSEKEEPING_INTERVAL_S = 5.0
OUTCOME_FLUSH_S = 0.05
# How long, on stopping, outcomes not yet committed get (the listener's drain grace).
OUTCOME_DRAIN_S = 5.0
# Back-off while the database is away: for the LISTEN connection and outcome commits.
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 5.0
CLAIM_BATCH = 64
# Exchanges under way at once. A push moves at most IN_FLIGHT per claim's round trip, and at
# most IN_FLIGHT per device round trip: on cellular links of a second or two, 1,024 move
# 10,000 lights in 10-20 s. Each costs a few hundred bytes here; the answers of a burst fit
# the socket's 4 MiB receive buffer. On loopback, 512 left the dispatcher waiting on its
# claims (bench/RESULTS.md, bench/dimming: 3.0-3.5 s a push instead of 3.0-5.4 s).
IN_FLIGHT = 1024


def _json_readings(readings: list[Reading]) -> dict:
    # Always an object at the top: a bare JSON array would be read as an array dimension of jsonb[].
    # Other values (opaque bytes, times, object links) as the device's state shows them.
    return {"readings": [{"path": str(r.path), "value": without_token(str(r.path), r.value) if isinstance(
        r.value, int | float | str | bool | None) else stored_value(*split_value(r.value))}
        for r in readings]}


def _written_state(command: DeviceCommand) -> tuple:
    """A written value is the resource's state now: a telemetry point committed with the outcome."""
    return (command.tenant_id, command.device_id, datetime.now(UTC), command.path,
            *split_value(without_token(command.path, command.value)))


def _write_result(command: DeviceCommand) -> dict:
    """A write's result, as the command's outcome (and its event) shows it."""
    return {"written": without_token(command.path, command.value)}


class Dispatcher:
    def __init__(self, db: Database, queue: CommandQueue, client: DeviceClient, server: LwM2MServer,
                 *, concurrency: int = IN_FLIGHT, health: Health | None = None,
                 downloads: Downloads | None = None, resume: bool = False) -> None:
        self.db = db
        # Taking over from a process that had this node's name (resume): done as run() starts,
        # before the first heartbeat, which would hide when that process's last one was.
        self._resume_pending = resume
        # Firmware images through the node's chunk cache, for PUSH_FIRMWARE.
        self.downloads = downloads
        self.health = health or Health()
        self.queue = queue
        self.client = client
        self.server = server
        self.concurrency = concurrency
        self.claim_batch = max(1, min(CLAIM_BATCH, concurrency // 4))
        self._in_flight = 0  # exchanges with a device under way
        follow(DISPATCHER_IN_FLIGHT, self, lambda dispatcher: dispatcher._in_flight)
        # Commands sent whose outcome is not recorded yet: released on stopping.
        self._unanswered: set = set()
        self._recording = 0  # answered, their results being committed
        self._wake = asyncio.Event()
        self._outcomes: list[Outcome] = []
        self._outcome_ready = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.observations: dict[tuple, tuple[object, asyncio.Task]] = {}

    async def run(self) -> None:
        if self._resume_pending:
            await self.resume()  # a database away: the supervisor runs this again
            self._resume_pending = False
        supervisor = Supervisor(self.health)
        supervisor.start("command-outcomes", self._flush_outcomes)
        supervisor.start("command-housekeeping", self._housekeeping)
        stopping = False
        try:
            await self._listen_and_claim()
        except asyncio.CancelledError:
            stopping = True  # the node stops; not a crash its supervisor restarts this after
            raise
        finally:
            # Nothing more is claimed; what devices are doing now they are let to answer, so a
            # command another node takes over is one no device has carried out yet.
            await self._answers_in_flight(OUTCOME_DRAIN_S)
            await supervisor.stop()
            # Let go of aiocoap's side too while its context is up: left to the context's
            # shutdown, each observation's end would surface as an unretrieved LibraryShutdown.
            for observation, follower in self.observations.values():
                observation.abandon(follower)
            self.observations.clear()
            for task in list(self._tasks):
                task.cancel()
            await self._drain_outcomes(OUTCOME_DRAIN_S)
            await self._release_unanswered()
            if stopping:
                # Not on a crash: this comes back in a moment and its devices stay this node's.
                await self._leave()
            try:
                async with asyncio.timeout(OUTCOME_DRAIN_S):
                    await self.queue.close()
            except Exception:  # noqa: BLE001 - its connection is dropped with the pool anyway
                log.debug("closing the claim connection failed", exc_info=True)

    async def _listen_and_claim(self) -> None:
        """Claim on a LISTEN connection held for it; when the database goes away, that
        connection and the claim connection are dropped and taken anew once it is back."""
        delay = RECONNECT_FIRST_S
        while True:
            try:
                async with self.db.pool.acquire() as listener:
                    await listener.add_listener(NOTIFY_CHANNEL, self._notified)
                    try:
                        delay = RECONNECT_FIRST_S
                        await self._claim_forever(listener)
                    finally:
                        with contextlib.suppress(Exception):
                            await listener.remove_listener(NOTIFY_CHANNEL, self._notified)
            except Exception as exc:
                if not database_away(exc) and not broken_connection(exc):
                    raise
                if database_away(exc):
                    self.health.database_lost(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _claim_forever(self, listener) -> None:
        failing = False
        while True:
            if lost(listener):
                # Its notifications are lost with it: take a new one.
                raise asyncpg.ConnectionDoesNotExistError("the LISTEN connection was lost")
            free = self.free_slots
            # A claim costs PostgreSQL milliseconds whatever its size: while commands are in
            # flight, wait until a batch's worth of slots is free rather than claim one by one.
            busy = self._in_flight + self._recording > 0
            claimed = []
            if free >= (self.claim_batch if busy else 1):
                try:
                    claimed = await self.queue.claim(free)
                except Exception as exc:
                    if database_away(exc) or broken_connection(exc):
                        raise  # the claim connection is dropped already; the LISTEN one follows
                    if not failing:  # once per streak: the same failure comes every poll
                        log.exception("claiming commands failed", error=repr(exc))
                    failing = True
                else:
                    failing = False
                    self.health.database_back()
            for command, host, port, secure in claimed:
                self._start(command, DeviceAddress(host, port, secure, command.device_id))
            if len(claimed) < max(free, 1):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_INTERVAL_S):
                        await self._wake.wait()

    def _notified(self, *_args) -> None:
        self._wake.set()

    def end_observations(self, device_ids: set[UUID]) -> None:
        """These devices' registrations ended (de-registered, expired, decommissioned), and
        with them their observations (TS §6.4): stop following their notifications."""
        for key in [key for key in self.observations if key[0] in device_ids]:
            observation, follower = self.observations.pop(key)
            observation.abandon(follower)

    async def device_awake(self, registration: Registration, session: Session, *, update: bool = False) -> None:
        """A device just registered or updated: it is listening now (queue mode included).

        A new registration ends the previous one's observations (TS §6.4): observe again. An
        Update keeps them, unless another node made them: the device moved here (NAT rebinding
        to another node, or its node stopped), and their notifications no longer reach that one.
        """
        paths, claimed = await self.queue.awake(registration.device_id, moved=update, limit=64)
        for path in paths:
            self._observe_again(registration, path)
        for command, host, port, secure in claimed:
            self._start(command, DeviceAddress(host, port, secure, command.device_id))

    async def resume(self) -> None:
        """Take over from a process that had this node's name and died (a node's worker
        restarted in its slot, devices' datagrams still reaching its socket): the commands it
        left sent go back to the queue for this one, and its observations are made again (its
        aiocoap state died with it)."""
        released = await self.queue.release_left_behind()
        async with self.db.system_tx() as conn:
            observed = await RegistrationRepository(conn).observed_through(self.queue.node)
        for registration, path in observed:
            self._observe_again(registration, path)
        if released or observed:
            log.info("took over from this node's previous process", node=self.queue.node,
                     commands_released=released, observations=len(observed))

    def _observe_again(self, registration: Registration, path: str) -> None:
        self._observe_at(registration.tenant_id, DeviceAddress.of(registration), path)

    def _observe_at(self, tenant_id: UUID, address: DeviceAddress, path: str) -> None:
        key = (address.device_id, path)
        previous = self.observations.pop(key, None)
        if previous is not None:
            # Its registration is gone, and with it the device's side (nobody to ask): let it go
            # here too. Cancelling only the follower kept aiocoap's observation, its request and
            # its token for good, one more per device at each Register (a campaign's reboots).
            previous[0].abandon(previous[1])
        command = DeviceCommand(id=None, batch_id=None, tenant_id=tenant_id,
                                device_id=address.device_id, operation=Operation.OBSERVE,
                                path=path, value=None, status=None, attempts=0, expires_at=None)
        self._spawn(self._deliver(command, address))

    async def _adopt(self) -> None:
        """Serve the devices of nodes that stopped: their commands come to this node's claims
        from now on, and their observations are made again from here (the stopped node's went
        with its memory)."""
        observations = await self.queue.adopt()
        for row in observations:
            self._observe_at(row["tenant_id"], DeviceAddress(row["address"], row["port"], row["secure"],
                                                             row["device_id"]), row["path"])
        if observations:
            log.info("observations of a stopped node taken over", count=len(observations))

    def _start(self, command: DeviceCommand, address: DeviceAddress) -> None:
        """Deliver one command; its slot is free as soon as the device has answered.

        What follows the answer (committing the readings or the written value, then the
        outcome) waits on group commits, not on the network; holding the slot through it
        would cap a push at `concurrency` per commit interval. Those waits are bounded
        separately, by `_recording`.
        """
        if command.id is not None:
            self._unanswered.add(command.id)
        if command.operation is Operation.WRITE and self.client.writes_fast:
            # The bulk of every dimming push: no task, just the device's answer.
            try:
                answer = self.client.start_write(address, command.path, command.value)
            except Exception as exc:  # noqa: BLE001 - an unexpected error must not stop the dispatcher
                log.exception("command delivery failed", command=str(command.id))
                self._record(Outcome(command.id, False, None, f"internal error: {type(exc).__name__}"))
                return
            self._in_flight += 1
            answer.add_done_callback(functools.partial(self._written, command))
            return
        self._in_flight += 1
        released = False

        def release(_task: object = None) -> None:
            nonlocal released
            if not released:
                released = True
                self._in_flight -= 1
                self._recording += 1
                self._wake.set()

        def done(_task: object) -> None:
            release()
            self._recording -= 1
            self._wake.set()

        task = self._spawn(self._deliver(command, address, release))
        task.add_done_callback(done)

    def _written(self, command: DeviceCommand, answer: asyncio.Future) -> None:
        self._in_flight -= 1
        self._wake.set()
        if answer.cancelled():
            return  # shutting down: the command stays `sent` and is recovered
        try:
            self.client.check(answer.result())
        except RequestFailed as exc:
            self._record(Outcome(command.id, False, None, f"no answer: {exc}"))
        except DeviceRequestFailed as exc:
            self._record(Outcome(command.id, False, None, exc.detail, retryable=exc.retryable))
        except Exception as exc:  # noqa: BLE001 - an unexpected error must not leave the command `sent`
            log.exception("command delivery failed", command=str(command.id))
            self._record(Outcome(command.id, False, None, f"internal error: {type(exc).__name__}"))
        else:
            self._record(Outcome(command.id, True, _write_result(command), state=_written_state(command)))

    def _record(self, outcome: Outcome) -> None:
        self._unanswered.discard(outcome.command_id)
        self._outcomes.append(outcome)
        self._outcome_ready.set()

    @property
    def free_slots(self) -> int:
        """How many more commands may be claimed now: exchanges in flight, and answers still
        being recorded or their outcomes committed (at most as many again), both bounded by
        `concurrency`; so outcomes waiting for the database cannot pile up without bound."""
        return min(self.concurrency - self._in_flight,
                   2 * self.concurrency - self._in_flight - self._recording - len(self._outcomes))

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task) -> None:
        """A delivery or an observation's follower ended; one that crashed says so, once.
        (A follower is not restarted here: its observation is gone with it, and the device is
        observed again at its next Register.)"""
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if database_away(exc):
            self.health.database_lost(exc)
        else:
            log.error("dispatcher task crashed", task=task.get_name(), exc_info=exc)

    async def _deliver(self, command: DeviceCommand, address: DeviceAddress,
                       answered: Callable[[], None] = lambda: None) -> None:
        path = ResourcePath.parse(command.path)
        session = Session("", command.device_id, command.tenant_id, "")
        try:
            result = await self._perform(command, address, path, session, answered)
            state = _written_state(command) if command.operation is Operation.WRITE else None
            outcome = Outcome(command.id, True, result, state=state)
        except DeviceRequestFailed as exc:
            outcome = Outcome(command.id, False, None, exc.detail, retryable=exc.retryable)
        except CodecError as exc:
            outcome = Outcome(command.id, False, None, f"undecodable answer: {exc}", retryable=False)
        except NotFound as exc:  # what the command names is gone (a firmware image): no retry helps
            outcome = Outcome(command.id, False, None, exc.detail, retryable=False)
        except Unavailable as exc:  # its answer could not be stored: tried again later
            outcome = Outcome(command.id, False, None, exc.detail)
        except Exception as exc:  # noqa: BLE001 - an unexpected error must not lose the command
            log.exception("command delivery failed", command=str(command.id))
            outcome = Outcome(command.id, False, None, f"internal error: {type(exc).__name__}")
        if command.id is not None:
            self._record(outcome)

    async def _perform(self, command: DeviceCommand, address: DeviceAddress, path: ResourcePath,
                       session: Session, answered: Callable[[], None]):
        now = datetime.now(UTC)
        if command.operation is Operation.READ:
            readings = await self.client.read(address, path, device_id=command.device_id)
            answered()
            await self.server.store(session, readings, now)
            return _json_readings(readings)
        if command.operation is Operation.WRITE:
            await self.client.write(address, path, command.value)
            return _write_result(command)
        if command.operation is Operation.EXECUTE:
            await self.client.execute(address, path, command.value if isinstance(command.value, str) else None)
            return {"executed": str(path)}
        if command.operation is Operation.OBSERVE:
            return await self._observe(command, address, path, session)
        if command.operation is Operation.CANCEL_OBSERVE:
            handle = self.observations.pop((command.device_id, command.path), None)
            told = await handle[0].cancel(handle[1]) if handle is not None else False
            async with self.db.system_tx() as conn:
                await conn.execute("delete from observations where device_id = $1 and path = $2",
                                   command.device_id, command.path)
            return {"observing": False, "device_told": told}
        if command.operation is Operation.WRITE_ATTRIBUTES:
            await self.client.write_attributes(address, path, command.value)
            return {"attributes": command.value}
        if command.operation is Operation.PUSH_FIRMWARE:
            return await self._push_firmware(command, address, path)
        if command.operation is Operation.DISCOVER:
            links = await self.client.discover(address, path)
            return {"links": [{"path": link.path, "attributes": attribute_values(link)} for link in links]}
        raise DeviceRequestFailed(f"unknown operation {command.operation}")

    async def _push_firmware(self, command: DeviceCommand, address: DeviceAddress, path: ResourcePath):
        """Block1 writes of the image to /5/0/0, at the block size the device takes."""
        if self.downloads is None:
            raise NotFound("this node was started without firmware delivery")
        value = command.value.get("image_id") if isinstance(command.value, dict) else None
        try:
            image_id = UUID(str(value))
        except ValueError:
            raise NotFound(f"no firmware image {value!r}: the value must be {{\"image_id\": \"<uuid>\"}}") from None
        image = await self.downloads.image(command.tenant_id, image_id)
        block_size = await self.client.push(address, path, image)
        return {"pushed_bytes": len(image), "block_size": block_size}

    async def _observe(self, command: DeviceCommand, address: DeviceAddress, path: ResourcePath,
                       session: Session):
        async def on_readings(readings: list[Reading]) -> None:
            try:
                await self.server.store(session, readings, datetime.now(UTC))
            except Unavailable:
                pass  # the database is away (logged once): the next notification brings news

        first, observation = await self.client.observe(address, path, on_readings, device_id=command.device_id)
        await self.server.store(session, first, datetime.now(UTC))
        key = (command.device_id, command.path)
        previous = self.observations.pop(key, None)
        if previous is not None:  # observed again: the device need not keep notifying the old one
            self._spawn(previous[0].cancel(previous[1]))
        self.observations[key] = (observation, self._spawn(observation.follow()))
        async with self.db.system_tx() as conn:
            await conn.execute(
                """insert into observations (device_id, path, tenant_id, node, active, established_at)
                   values ($1, $2, $3, $4, true, now())
                   on conflict (device_id, path) do update
                       set node = excluded.node, active = true, established_at = now()""",
                command.device_id, command.path, command.tenant_id, self.queue.node)
        return {"observing": True, **_json_readings(first)}

    async def _flush_outcomes(self) -> None:
        delay = OUTCOME_FLUSH_S
        while True:
            await self._outcome_ready.wait()
            await asyncio.sleep(OUTCOME_FLUSH_S)
            if await self._commit_outcomes():
                delay = OUTCOME_FLUSH_S
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)

    async def _commit_outcomes(self) -> bool:
        """Commit the outcomes recorded so far; False (and they are kept, in order) while the
        database is away. An outcome left `sent` would be sent again after five minutes, so an
        Execute could run twice: an outcome is never dropped here."""
        self._outcome_ready.clear()
        batch, self._outcomes = self._outcomes, []
        if not batch:
            return True
        try:
            await self.queue.complete(batch)
        except asyncio.CancelledError:
            # Stopping mid-commit: the drain commits them again (`complete` only moves
            # commands still `sent`, so one committed already is not counted twice).
            self._outcomes[:0] = batch
            raise
        except Exception as exc:  # noqa: BLE001 - classified below; nothing is dropped
            if database_away(exc):
                return self._keep(batch, exc)
            # One outcome's content (a read answer the database cannot store) fails the whole
            # batch: commit each on its own, and the culprit without its result.
            for n, outcome in enumerate(batch):
                try:
                    await self._commit_alone(outcome)
                except Exception as alone:  # noqa: BLE001 - only the database being away is left
                    return self._keep(batch[n:], alone)
        self.health.database_back()
        return True

    async def _commit_alone(self, outcome: Outcome) -> None:
        try:
            await self.queue.complete([outcome])
        except Exception as exc:
            if database_away(exc):
                raise
            log.error("command outcome could not be stored; recorded without its result",
                      command=str(outcome.command_id), exc_info=exc)
            await self.queue.complete([Outcome(
                outcome.command_id, outcome.succeeded, None,
                f"the result could not be stored ({type(exc).__name__})", retryable=False)])

    def _keep(self, batch: list[Outcome], exc: BaseException) -> bool:
        if database_away(exc):
            self.health.database_lost(exc)
        else:
            log.error("recording command outcomes failed; retrying", count=len(batch), exc_info=exc)
        self._outcomes[:0] = batch
        self._outcome_ready.set()
        return False

    async def _release_unanswered(self) -> None:
        """Commands cut off by stopping go back to the queue at once rather than after the
        5-minute recovery: another node (or this one, restarted) sends them again."""
        pending = {o.command_id for o in self._outcomes}
        unanswered = [c for c in self._unanswered if c not in pending]
        if not unanswered:
            return
        try:
            async with asyncio.timeout(OUTCOME_DRAIN_S):
                released = await self.queue.release(unanswered)
        except Exception:  # noqa: BLE001 - housekeeping recovers them after 5 minutes instead
            log.warning("stopping with commands in flight not released; they are sent again "
                        "after 5 minutes", count=len(unanswered), exc_info=True)
        else:
            log.info("commands in flight released on stopping", count=released)

    async def _answers_in_flight(self, grace_s: float) -> None:
        """On stopping: wait up to `grace_s` for the answers of exchanges under way."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                while self._in_flight > 0:
                    self._wake.clear()
                    await self._wake.wait()

    async def _leave(self) -> None:
        """Tell the other nodes this one stopped, so they take its devices over now."""
        try:
            async with asyncio.timeout(OUTCOME_DRAIN_S):
                await self.queue.leave()
        except Exception:  # noqa: BLE001 - they take over once its heartbeat is missed instead
            log.warning("stopping without telling the other nodes; they take this node's devices over "
                        "when its heartbeat is missed", exc_info=True)

    async def _drain_outcomes(self, grace_s: float) -> None:
        """On stopping: keep trying to commit outcomes for up to `grace_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        delay = OUTCOME_FLUSH_S
        while True:
            try:
                # Bounded, so that stopping never hangs on a pool with no connection to give.
                async with asyncio.timeout(max(deadline - loop.time(), 0.1)):
                    committed = await self._commit_outcomes()
                if committed:
                    return
            except TimeoutError:
                pass
            if loop.time() + delay > deadline:
                log.error("stopping with command outcomes not recorded; those commands stay "
                          "`sent` and are sent again after 5 minutes", count=len(self._outcomes))
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _housekeeping(self) -> None:
        # The heartbeat goes with it: at least three in a node timeout, so one late is no death.
        interval_s = min(HOUSEKEEPING_INTERVAL_S, self.queue.node_timeout.total_seconds() / 3)
        while True:
            try:
                expired, recovered = await self.queue.housekeeping()
                if expired or recovered:
                    log.info("command housekeeping", expired=expired, recovered=recovered)
                await self._adopt()
            except Exception as exc:
                if not database_away(exc):
                    raise  # our bug: the supervisor logs it once and restarts this loop
                self.health.database_lost(exc)  # retried on the next tick
            await asyncio.sleep(interval_s)
