"""Submitting commands to one device, a group or a filter; tracking them; the dispatcher's queue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from fleet import cursors
from fleet.access.models import Permission, Principal
from fleet.audit.service import record
from fleet.commands.hosting import hosted, lacks
from fleet.commands.models import (MAX_ATTEMPTS, MAX_EXPIRY, MAX_TARGET_DEVICES, Batch, CommandQuery, CommandRequest,
                                   CommandStatus, DeviceCommand, Operation, Outcome, RequestedCommand,
                                   Target)
from fleet.commands.repository import NODE_TIMEOUT, ONLY_SLOT, CommandRepository, Slot, prepare_claimer
from fleet.db import Database
from fleet.db.availability import discard
from fleet.errors import FieldError, NotFound, PermissionDenied, ValidationFailed
from fleet.firmware.delivery import without_token
from fleet.objectmodel import CATALOG, ResourcePath, ResourceType, coerce
from fleet.registry.filters import filter_to_json
from fleet.registry.models import DeviceFilter, Page
from fleet.registry.repository import DeviceRepository
from fleet.registry.service import MAX_PAGE
from fleet.telemetry.repository import TelemetryRepository

BACKOFF_BASE_S = 2.0
FIRMWARE_UPDATE_OBJECT = 5


async def _known_device(conn, tenant_id: UUID, device_id: UUID) -> None:
    """NotFound unless the city has this device (in service or not)."""
    if await DeviceRepository(conn).get(tenant_id, device_id) is None:
        raise NotFound(f"device {device_id} not found")


def _shown(entry: RequestedCommand) -> RequestedCommand:
    """A command as any key that reads sees it: a firmware Package URI's download token left out
    (only the device's own command keeps it, for the dispatcher)."""
    command = entry.command
    return replace(entry, command=replace(command, value=without_token(command.path, command.value)))


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


async def _lacking(repo: CommandRepository, tenant_id: UUID, path: str, device_ids: Sequence[UUID]) -> dict[UUID, str]:
    """Devices registered now whose links lack the path's object or instance, and what they
    lack; a device not registered is queued as always (nothing of its links is kept)."""
    resource = ResourcePath.parse(path)
    links = await repo.registered_links(tenant_id, device_ids)
    lacking = {device: lacks(resource, hosted(text)) for device, text in links.items()}
    return {device: missing for device, missing in lacking.items() if missing is not None}


def validate_request(request: CommandRequest) -> Any:
    """Check path and value against the object model; returns the value as it will be sent."""
    errors: list[FieldError] = []
    value = request.value
    try:
        path = ResourcePath.parse(request.path)
    except ValueError as exc:
        raise ValidationFailed("invalid command", [FieldError("path", str(exc))]) from None
    if request.operation in (Operation.WRITE, Operation.EXECUTE) and not path.is_resource_level:
        errors.append(FieldError("path", f"{request.operation.value} needs a resource path like /3416/0/1"))
    if request.operation in (Operation.WRITE_ATTRIBUTES, Operation.DISCOVER) and path.resource_instance is not None:
        errors.append(FieldError("path", f"{request.operation.value} takes an object, instance or resource path"))
    if request.operation is Operation.WRITE_ATTRIBUTES:
        if request.attributes is None:
            errors.append(FieldError("attributes", "write_attributes needs attributes, e.g. {\"pmin\": 10}"))
        else:
            errors.extend(FieldError("attributes", message) for message in request.attributes.rule_violations())
            value = msgspec.to_builtins(request.attributes)
    elif request.attributes is not None:
        errors.append(FieldError("attributes", f"{request.operation.value} takes no attributes"))
    if path.object == FIRMWARE_UPDATE_OBJECT and request.operation in (Operation.WRITE, Operation.EXECUTE):
        # A package written or an Update executed by hand would skip the signature check, the
        # approval, the maintenance windows and the once-only Update: firmware goes by campaign.
        errors.append(FieldError("path", "object 5 (Firmware Update) is written and executed only by "
                                         "firmware campaigns (/api/v1/firmware/campaigns); read or observe it"))
    definition = CATALOG.resource_at(path) if path.is_resource_level else None
    if request.operation is Operation.WRITE:
        if value is None:
            errors.append(FieldError("value", "a write needs a value"))
        elif definition is not None:
            if not definition.writable:
                errors.append(FieldError("path", f"{definition.name} is not writable"))
            else:
                try:
                    value = coerce(definition, value)
                    _check_range(definition, value)
                except ValueError as exc:
                    errors.append(FieldError("value", str(exc)))
    elif request.operation is Operation.EXECUTE and definition is not None and not definition.executable:
        errors.append(FieldError("path", f"{definition.name} is not executable"))
    elif request.operation not in (Operation.EXECUTE, Operation.WRITE) and request.value is not None:
        errors.append(FieldError("value", f"{request.operation.value} takes no value"))
    if not timedelta(seconds=1) <= request.expires_in <= MAX_EXPIRY:
        errors.append(FieldError("expires_in_s", "must be between 1 second and 7 days"))
    if errors:
        raise ValidationFailed("invalid command", errors)
    # JSON-friendly form for storage (bytes and times are not JSON).
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, tuple):
        return f"{value[0]}:{value[1]}"
    return value


def _check_range(definition, value: Any) -> None:
    text = (definition.range or "").strip()
    if ".." not in text or definition.type not in (ResourceType.INTEGER, ResourceType.UNSIGNED,
                                                   ResourceType.FLOAT):
        return
    low, _, high = text.partition("..")
    try:
        lo, hi = float(low), float(high)
    except ValueError:
        return
    if not lo <= value <= hi:
        raise ValueError(f"must be within {text}")


def target_json(t: Target) -> dict[str, Any]:
    """A target as it is stored and shown (commands' batches, firmware campaigns)."""
    if t.device_ids:
        return {"device_ids": [str(d) for d in t.device_ids]}
    if t.group_id:
        return {"group_id": str(t.group_id)}
    return {"filter": filter_to_json(t.filter or DeviceFilter())}


async def resolve_target(conn, tenant_id: UUID, target: Target) -> list[UUID]:
    """The devices a target names, as commands and firmware campaigns address them: listed ids
    (each must exist and be in service: 422 naming the others), a group's members (404 for an
    unknown group) or a filter's matches, at most MAX_TARGET_DEVICES."""
    repo = DeviceRepository(conn)
    if target.device_ids:
        ids = list(dict.fromkeys(target.device_ids))
        found_ids = await repo.in_service(tenant_id, ids)
        missing = [str(d) for d in ids if d not in found_ids]
        if missing:
            raise ValidationFailed("unknown devices", [FieldError(
                "target.device_ids", f"unknown or decommissioned: {', '.join(missing[:20])}")])
        return ids
    device_filter = DeviceFilter(group_id=target.group_id) if target.group_id else (target.filter or DeviceFilter())
    ids = await repo.ids_matching(tenant_id, device_filter)
    if len(ids) > MAX_TARGET_DEVICES:
        raise ValidationFailed("target too large", [FieldError(
            "target", f"matches {len(ids)} devices; at most {MAX_TARGET_DEVICES} at once")])
    return ids


class CommandService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def submit(self, principal: Principal, request: CommandRequest) -> Batch:
        if not principal.can(Permission.SEND_COMMANDS):
            raise PermissionDenied(f"role {principal.role.value} may not send commands")
        value = validate_request(request)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            device_ids = await resolve_target(conn, principal.tenant_id, request.target)
            expires_at = datetime.now(UTC) + request.expires_in
            repo = CommandRepository(conn)
            batch_id = await repo.insert_batch(
                principal.tenant_id, request.operation, request.path, value, target_json(request.target),
                device_ids, principal.api_key_id, request.origin, expires_at)
            if not request.target.device_ids:
                # Listed devices are sent what was asked; a filter or group may cover devices
                # that lack the path (a dimmer path to a filter that includes bins).
                await repo.skip(batch_id, await _lacking(repo, principal.tenant_id, request.path, device_ids))
            await record(conn, principal, f"command.{request.operation.value}", "command_batch", batch_id,
                         None, {"path": request.path, "value": value, "target": target_json(request.target),
                                "devices": len(device_ids)})
            batch = await CommandRepository(conn).batch(principal.tenant_id, batch_id, limit=0)
        return batch

    async def get(self, principal: Principal, batch_id: UUID, *, limit: int = 10_000) -> Batch:
        if not principal.can(Permission.READ):
            raise PermissionDenied("reading commands is not allowed for this key")
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            batch = await CommandRepository(conn).batch(principal.tenant_id, batch_id, limit=limit)
        if batch is None:
            raise NotFound(f"command {batch_id} not found")
        return batch

    async def cancel(self, principal: Principal, batch_id: UUID) -> Batch:
        if not principal.can(Permission.SEND_COMMANDS):
            raise PermissionDenied(f"role {principal.role.value} may not cancel commands")
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = CommandRepository(conn)
            if await repo.batch(principal.tenant_id, batch_id, limit=0) is None:
                raise NotFound(f"command {batch_id} not found")
            cancelled = await repo.cancel_batch(principal.tenant_id, batch_id)
            await record(conn, principal, "command.cancel", "command_batch", batch_id, None,
                         {"cancelled": cancelled})
            return await repo.batch(principal.tenant_id, batch_id, limit=10_000)

    async def list(self, principal: Principal, query: CommandQuery, *, cursor: str | None = None,
                   limit: int = 100) -> Page:
        """The city's commands (batches), newest first, a page of `Batch`es with their counts
        (per-device results: GET /api/v1/commands/{id})."""
        if not principal.can(Permission.READ):
            raise PermissionDenied("reading commands is not allowed for this key")
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed("invalid limit", [FieldError("limit", f"must be 1-{MAX_PAGE}")])
        query = replace(query, statuses=cursors.choices("status", query.statuses or [], set(CommandStatus)),
                        operations=cursors.choices("operation", query.operations or [], set(Operation)),
                        # api, lighting, collection, firmware:<campaign id>, ...: open-ended, matched as given.
                        origins=[o.strip() for v in query.origins or [] for o in v.split(",") if o.strip()] or None)
        # A time without an offset is UTC, as every time the API shows.
        query = replace(query, since=_aware(query.since), until=_aware(query.until))
        if query.since and query.until and query.since >= query.until:
            raise ValidationFailed("invalid period", [FieldError("until", "must be after since")])
        after = cursors.decode(b"cb:", cursor, tuple[datetime, UUID]) if cursor else None
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            if query.device_id is not None:
                await _known_device(conn, principal.tenant_id, query.device_id)
            items, more = await CommandRepository(conn).batches(principal.tenant_id, query, after=after, limit=limit)
        last = items[-1] if more else None
        return Page([replace(b, value=without_token(b.path, b.value)) for b in items],
                    cursors.encode(b"cb:", [last.created_at.isoformat(), str(last.id)]) if last else None)

    async def for_device(self, principal: Principal, device_id: UUID, *, statuses: Sequence[str] = (),
                         cursor: str | None = None, limit: int = 100) -> Page:
        """One device's commands, newest first, a page of `RequestedCommand`s (404 for a device
        this city does not have, as every device route)."""
        if not principal.can(Permission.READ):
            raise PermissionDenied("reading commands is not allowed for this key")
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed("invalid limit", [FieldError("limit", f"must be 1-{MAX_PAGE}")])
        wanted = cursors.choices("status", statuses, set(CommandStatus))
        after = cursors.decode(b"dc:", cursor, tuple[datetime, UUID]) if cursor else None
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            await _known_device(conn, principal.tenant_id, device_id)
            items, more = await CommandRepository(conn).for_device(
                principal.tenant_id, device_id, statuses=wanted, after=after, limit=limit)
        last = items[-1].command if more else None
        return Page([_shown(e) for e in items],
                    cursors.encode(b"dc:", [last.created_at.isoformat(), str(last.id)]) if last else None)

    async def observe(self, principal: Principal, device_id: UUID, path: str, *, start: bool) -> Batch:
        """Start or stop observing one device's path (the device is named by the URL: 404 if unknown)."""
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            await _known_device(conn, principal.tenant_id, device_id)
        operation = Operation.OBSERVE if start else Operation.CANCEL_OBSERVE
        return await self.submit(principal, CommandRequest(Target(device_ids=(device_id,)), operation, path))

    async def observations(self, principal: Principal, device_id: UUID) -> list[dict[str, Any]]:
        if not principal.can(Permission.READ):
            raise PermissionDenied("reading observations is not allowed for this key")
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            await _known_device(conn, principal.tenant_id, device_id)
            rows = await conn.fetch(
                """select path, active, established_at from observations
                   where tenant_id = $1 and device_id = $2 order by path""", principal.tenant_id, device_id)
        return [dict(r) for r in rows]


class CommandQueue:
    """The dispatcher's side: claim what this node should send, record what happened.

    Claims from the whole queue follow one another all through a push, so they keep one
    connection set up for them (`prepare_claimer`): a claim is then one round trip instead of
    BEGIN, SET, the claim and COMMIT, each waiting its turn on a busy event loop. Claims for
    one device (it just woke up) run in a transaction of their own on a pooled connection.
    """

    def __init__(self, db: Database, node: str, *, node_timeout: timedelta = NODE_TIMEOUT,
                 slot: Slot = ONLY_SLOT) -> None:
        self.db = db
        self.node = node
        # After this long without a heartbeat a node's devices are this one's to serve too
        # (those its slot hears, in a node of several device edge processes).
        self.node_timeout = node_timeout
        self.slot = slot
        self._claimer: asyncpg.Connection | None = None

    async def claim(self, limit: int, device_id: UUID | None = None) -> list[tuple[DeviceCommand, str, int, bool]]:
        if device_id is not None:
            async with self.db.system_tx() as conn:
                return await CommandRepository(conn).claim_due(self.node, limit, device_id=device_id,
                                                               node_timeout=self.node_timeout, slot=self.slot)
        if self._claimer is None:
            conn = await self.db.pool.acquire()
            try:
                await prepare_claimer(conn)
            except BaseException:
                await self._drop(conn)
                raise
            self._claimer = conn
        try:
            return await CommandRepository(self._claimer).claim_due(self.node, limit, prepared=True,
                                                                    node_timeout=self.node_timeout, slot=self.slot)
        except BaseException:
            # Lost, or cut off mid-statement (a cancelled claim): a connection in an unknown
            # state is not worth keeping; the next claim takes a fresh one.
            conn, self._claimer = self._claimer, None
            await self._drop(conn)
            raise

    async def close(self) -> None:
        """Give the claim connection back, its session settings undone."""
        conn, self._claimer = self._claimer, None
        if conn is None:
            return
        try:
            await conn.execute("reset all")
        except Exception:  # noqa: BLE001 - dropped instead
            await discard(self.db.pool, conn)
            return
        await self.db.pool.release(conn)

    async def _drop(self, conn: asyncpg.Connection) -> None:
        await discard(self.db.pool, conn)

    async def complete(self, outcomes: Sequence[Outcome]) -> None:
        """Record outcomes, and the values written, in one transaction: a write that shows
        `succeeded` shows its value in the device's state too."""
        if outcomes:
            async with self.db.system_tx() as conn:
                await CommandRepository(conn).complete(outcomes, max_attempts=MAX_ATTEMPTS,
                                                       backoff_base_s=BACKOFF_BASE_S)
                await TelemetryRepository(conn).record([o.state for o in outcomes if o.state is not None])

    async def release(self, command_ids: Sequence[UUID]) -> int:
        """On stopping: commands sent without an answer go back to the queue now (a firmware
        Update fails instead: it must not run twice)."""
        if not command_ids:
            return 0
        async with self.db.system_tx() as conn:
            return await CommandRepository(conn).release(command_ids)

    async def release_left_behind(self) -> int:
        """On starting under a name a process had before (it died), before this one's first
        heartbeat: the commands it left sent go back to the queue, for this one to send (a
        firmware Update fails instead)."""
        async with self.db.system_tx() as conn:
            return await CommandRepository(conn).release_through(self.node, self.node_timeout)

    async def housekeeping(self, stale_after: timedelta = timedelta(minutes=5)) -> tuple[int, int]:
        async with self.db.system_tx() as conn:
            repo = CommandRepository(conn)
            await repo.heartbeat(self.node)
            return await repo.expire(), await repo.recover_stale(stale_after)

    async def adopt(self) -> list[asyncpg.Record]:
        """Take over the devices of nodes that stopped; the observations to establish again."""
        async with self.db.system_tx() as conn:
            return await CommandRepository(conn).adopt(self.node, self.node_timeout, self.slot)

    async def leave(self) -> None:
        """This node stops: the others take its devices over now (see CommandRepository.leave)."""
        async with self.db.system_tx() as conn:
            await CommandRepository(conn).leave(self.node)

    async def awake(self, device_id: UUID, *, moved: bool,
                    limit: int) -> tuple[list[str], list[tuple[DeviceCommand, str, int, bool]]]:
        """A device that registered or updated: `observed_paths` and `claim(limit, device_id)` in
        one transaction (one commit and one wait for a connection per follow-up, not two)."""
        async with self.db.system_tx() as conn:
            repo = CommandRepository(conn)
            paths = await repo.observed_paths(device_id, elsewhere_than=self.node if moved else None)
            claimed = await repo.claim_due(self.node, limit, device_id=device_id,
                                           node_timeout=self.node_timeout, slot=self.slot)
        return paths, claimed
