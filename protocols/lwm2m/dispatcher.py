"""Delivers queued commands to devices over CoAP and feeds their results back into Fleet.

Every node runs one. It claims due commands with FOR UPDATE SKIP LOCKED (so nodes never send
the same command twice), sends them with bounded concurrency from the listener's socket, and
records outcomes in batches. LISTEN/NOTIFY wakes it when commands arrive; a slow poll covers
missed notifications and retry times.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import structlog

from fleet.commands.models import DeviceCommand, Operation, Outcome
from fleet.commands.repository import NOTIFY_CHANNEL
from fleet.commands.service import CommandQueue
from fleet.db import Database
from fleet.objectmodel import Reading, ResourcePath
from fleet.registrations.models import Registration
from protocols.lwm2m.downlink import DeviceAddress, DeviceClient, DeviceRequestFailed
from protocols.lwm2m.errors import CodecError
from protocols.lwm2m.server import LwM2MServer, Session

log = structlog.get_logger("fleet.lwm2m.dispatcher")

POLL_INTERVAL_S = 1.0
HOUSEKEEPING_INTERVAL_S = 5.0
OUTCOME_FLUSH_S = 0.02


def _json_readings(readings: list[Reading]) -> dict:
    # Always an object at the top: a bare JSON array would be read as an array dimension of jsonb[].
    return {"readings": [{"path": str(r.path), "value": r.value if isinstance(
        r.value, int | float | str | bool | None) else str(r.value)} for r in readings]}


class Dispatcher:
    def __init__(self, db: Database, queue: CommandQueue, client: DeviceClient, server: LwM2MServer,
                 *, concurrency: int = 512) -> None:
        self.db = db
        self.queue = queue
        self.client = client
        self.server = server
        self.concurrency = concurrency
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._outcomes: list[Outcome] = []
        self._outcome_ready = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.observations: dict[tuple, tuple[object, asyncio.Task]] = {}

    async def run(self) -> None:
        async with self.db.pool.acquire() as listener:
            await listener.add_listener(NOTIFY_CHANNEL, self._notified)
            try:
                await self._claim_forever()
            finally:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(NOTIFY_CHANNEL, self._notified)

    async def _claim_forever(self) -> None:
        flusher = asyncio.create_task(self._flush_outcomes())
        keeper = asyncio.create_task(self._housekeeping())
        try:
            while True:
                free = self.concurrency - self._in_flight
                claimed = await self.queue.claim(free) if free > 0 else []
                for command, host, port in claimed:
                    self._start(command, host, port)
                if len(claimed) < max(free, 1):
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL_S)
        finally:
            flusher.cancel()
            keeper.cancel()
            for _handle, task in self.observations.values():
                task.cancel()
            for task in list(self._tasks):
                task.cancel()
            await self._drain_outcomes()

    def _notified(self, *_args) -> None:
        self._wake.set()

    async def device_awake(self, registration: Registration, session: Session, *, update: bool = False) -> None:
        """A device just registered or updated: it is listening now (queue mode included)."""
        if not update:
            # A new registration ends the previous one's observations (TS §6.4): observe again.
            async with self.db.system_tx() as conn:
                paths = await conn.fetch("select path from observations where device_id = $1",
                                         registration.device_id)
            for row in paths:
                self._observe_again(registration, row["path"])
        for command, host, port in await self.queue.claim(64, device_id=registration.device_id):
            self._start(command, host, port)

    def _observe_again(self, registration: Registration, path: str) -> None:
        key = (registration.device_id, path)
        previous = self.observations.pop(key, None)
        if previous is not None:
            previous[1].cancel()
        command = DeviceCommand(id=None, batch_id=None, tenant_id=registration.tenant_id,
                                device_id=registration.device_id, operation=Operation.OBSERVE,
                                path=path, value=None, status=None, attempts=0, expires_at=None)
        self._spawn(self._deliver(command, registration.address, registration.port))

    def _start(self, command: DeviceCommand, host: str, port: int) -> None:
        self._in_flight += 1
        task = self._spawn(self._deliver(command, host, port))
        task.add_done_callback(lambda _t: self._release())

    def _release(self) -> None:
        self._in_flight -= 1
        self._wake.set()

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, command: DeviceCommand, host: str, port: int) -> None:
        address = DeviceAddress(host, port)
        path = ResourcePath.parse(command.path)
        session = Session("", command.device_id, command.tenant_id, "")
        try:
            result = await self._perform(command, address, path, session)
            outcome = Outcome(command.id, True, result)
        except DeviceRequestFailed as exc:
            # 4.xx means the device understood and refused: retrying cannot help.
            outcome = Outcome(command.id, False, None, exc.detail,
                              retryable=not (exc.code or "").startswith("4"))
        except CodecError as exc:
            outcome = Outcome(command.id, False, None, f"undecodable answer: {exc}", retryable=False)
        except Exception as exc:  # noqa: BLE001 - an unexpected error must not lose the command
            log.exception("command delivery failed", command=str(command.id))
            outcome = Outcome(command.id, False, None, f"internal error: {type(exc).__name__}")
        if command.id is not None:
            self._outcomes.append(outcome)
            self._outcome_ready.set()

    async def _perform(self, command: DeviceCommand, address: DeviceAddress, path: ResourcePath,
                       session: Session):
        now = datetime.now(UTC)
        if command.operation is Operation.READ:
            readings = await self.client.read(address, path)
            await self.server.store(session, readings, now)
            return _json_readings(readings)
        if command.operation is Operation.WRITE:
            await self.client.write(address, path, command.value)
            # The written value is the resource's state now; record it like a report.
            await self.server.store(session, [Reading(path, now, command.value)], now)
            return {"written": command.value}
        if command.operation is Operation.EXECUTE:
            await self.client.execute(address, path, command.value if isinstance(command.value, str) else None)
            return {"executed": str(path)}
        if command.operation is Operation.OBSERVE:
            return await self._observe(command, address, path, session)
        if command.operation is Operation.CANCEL_OBSERVE:
            handle = self.observations.pop((command.device_id, command.path), None)
            if handle is not None:
                handle[0].observation.cancel()
                handle[1].cancel()
            async with self.db.system_tx() as conn:
                await conn.execute("delete from observations where device_id = $1 and path = $2",
                                   command.device_id, command.path)
            return {"observing": False}
        raise DeviceRequestFailed(f"unknown operation {command.operation}")

    async def _observe(self, command: DeviceCommand, address: DeviceAddress, path: ResourcePath,
                       session: Session):
        async def on_readings(readings: list[Reading]) -> None:
            await self.server.store(session, readings, datetime.now(UTC))

        first, (pending, follow) = await self.client.observe(address, path, on_readings)
        await self.server.store(session, first, datetime.now(UTC))
        key = (command.device_id, command.path)
        previous = self.observations.pop(key, None)
        if previous is not None:
            previous[1].cancel()
        self.observations[key] = (pending, self._spawn(follow()))
        async with self.db.system_tx() as conn:
            await conn.execute(
                """insert into observations (device_id, path, tenant_id, node, active, established_at)
                   values ($1, $2, $3, $4, true, now())
                   on conflict (device_id, path) do update
                       set node = excluded.node, active = true, established_at = now()""",
                command.device_id, command.path, command.tenant_id, self.queue.node)
        return {"observing": True, **_json_readings(first)}

    async def _flush_outcomes(self) -> None:
        while True:
            await self._outcome_ready.wait()
            await asyncio.sleep(OUTCOME_FLUSH_S)
            await self._drain_outcomes()

    async def _drain_outcomes(self) -> None:
        self._outcome_ready.clear()
        batch, self._outcomes = self._outcomes, []
        if not batch:
            return
        try:
            await self.queue.complete(batch)
        except Exception:  # noqa: BLE001 - stale 'sent' rows are recovered by housekeeping
            log.exception("recording command outcomes failed", count=len(batch))

    async def _housekeeping(self) -> None:
        while True:
            try:
                expired, recovered = await self.queue.housekeeping()
                if expired or recovered:
                    log.info("command housekeeping", expired=expired, recovered=recovered)
            except Exception:  # noqa: BLE001 - retried on the next tick
                log.exception("command housekeeping failed")
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
