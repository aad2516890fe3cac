"""Use cases of the device registry; each owns its transaction and writes its audit entry."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Mapping
from typing import Any
from uuid import UUID

import asyncpg

from fleet import cursors
from fleet.alarms.merging import clear_for_decommissioned
from fleet.access.models import Permission, Principal
from fleet.audit.service import record, record_many
from fleet.commands.repository import CommandRepository
from fleet.db import Database
from fleet.errors import Conflict, FieldError, NotFound, PermissionDenied, ValidationFailed
from fleet.events.models import DEVICE_STATUS_CHANGED
from fleet.events.service import publish
from fleet.registrations.repository import RegistrationRepository
from fleet.registry.importing import rows_from_csv, rows_from_geojson
from fleet.registry.models import Device, DeviceFilter, NewDevice, Page
from fleet.registry.repository import COPY_CHUNK, DeviceRepository
from fleet.registry.validation import validate_changes, validate_new_device
from fleet.security.models import ImportedCredential
from fleet.security.repository import CredentialRepository
from fleet.security.service import SecurityService
from fleet.security.validation import SECURITY_COLUMNS, credentials_from_row, duplicate_credentials
from fleet.settings import SecuritySettings

MAX_PAGE = 1000
# Devices an export reads per transaction.
EXPORT_CHUNK = 1000
_NETWORK_STATUSES = ("online", "offline")


def encode_cursor(key: tuple) -> str:
    """(seq,) of the seq order as it always was; (distance, seq) of nearest first."""
    if len(key) == 2:
        return cursors.encode(b"dn:", key)
    return base64.urlsafe_b64encode(f"d:{key[0]}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple:
    """The key `encode_cursor` put in, either kind: whether a list is nearest-first can come from
    a group's saved filter the caller never named, so the repository checks that the kinds agree."""
    try:
        if len(cursor) > cursors.MAX_CURSOR:
            raise ValueError
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if text.startswith(b"dn:"):
            return tuple(cursors.decode(b"dn:", cursor, tuple[float, int]))
        kind, _, seq = text.decode().partition(":")
        number = int(seq)
        # A seq is a bigint; anything outside it was not issued here (and would overflow the query).
        if kind != "d" or not 0 <= number < 2**63:
            raise ValueError
        return (number,)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("invalid cursor", [FieldError("cursor", "is not a cursor this API issued")]) from None


def require(principal: Principal, permission: Permission) -> None:
    if not principal.can(permission):
        raise PermissionDenied(f"role {principal.role.value} may not {permission.value.replace('_', ' ')}")


def conflict_from(exc: asyncpg.UniqueViolationError) -> Conflict:
    constraint = exc.constraint_name or ""
    if "endpoint" in constraint:
        return Conflict("a device with this endpoint already exists")
    if "serial" in constraint:
        return Conflict("a device with this serial already exists in this city")
    return Conflict("duplicate device")


class DeviceService:
    def __init__(self, db: Database, *, security: SecuritySettings | None = None) -> None:
        self.db = db
        # Encrypts the keys an import brings (fleet.security); without FLEET_CREDENTIALS_KEY an
        # import with keys is refused (503), one without is not.
        self.security = SecurityService(db, security or SecuritySettings())

    async def create(self, principal: Principal, raw: Mapping[str, Any]) -> Device:
        require(principal, Permission.MANAGE_DEVICES)
        new = validate_new_device(raw)
        return await self.create_validated(principal, new)

    async def create_validated(self, principal: Principal, new: NewDevice) -> Device:
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            try:
                async with conn.transaction():
                    device = await DeviceRepository(conn).insert(principal.tenant_id, new)
            except asyncpg.UniqueViolationError as exc:
                raise conflict_from(exc) from None
            await record(conn, principal, "device.create", "device", device.id, None, device)
        return device

    async def get(self, principal: Principal, device_id: UUID) -> Device:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            device = await DeviceRepository(conn).get(principal.tenant_id, device_id)
        if device is None:
            raise NotFound(f"device {device_id} not found")
        return device

    async def update(self, principal: Principal, device_id: UUID, raw: Mapping[str, Any]) -> Device:
        require(principal, Permission.MANAGE_DEVICES)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = DeviceRepository(conn)
            before = await repo.get(principal.tenant_id, device_id, for_update=True)
            if before is None:
                raise NotFound(f"device {device_id} not found")
            if before.status == "decommissioned":
                raise Conflict("a decommissioned device cannot be changed")
            fields, attributes = validate_changes(raw, before.kind)
            if not fields and not attributes:
                return before
            try:
                async with conn.transaction():
                    after = await repo.update(principal.tenant_id, device_id, fields, attributes)
            except asyncpg.UniqueViolationError as exc:
                raise conflict_from(exc) from None
            await record(conn, principal, "device.update", "device", device_id, before, after)
            await _status_changed(conn, principal, before, after)
        return after

    async def decommission(self, principal: Principal, device_id: UUID) -> Device:
        require(principal, Permission.MANAGE_DEVICES)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = DeviceRepository(conn)
            before = await repo.get(principal.tenant_id, device_id, for_update=True)
            if before is None:
                raise NotFound(f"device {device_id} not found")
            after = await repo.decommission(principal.tenant_id, device_id)
            # Out of service means off the network too, on every node (the registration's end
            # is announced to every listener when this commits).
            await RegistrationRepository(conn).end_for_device(principal.tenant_id, device_id)
            # Its DTLS credentials too: no handshake with them any more, and their names are free.
            await CredentialRepository(conn).retire(principal.tenant_id, device_id, ("operational", "bootstrap"),
                                                    ("active", "pending"))
            await CommandRepository(conn).end_for_device(principal.tenant_id, device_id,
                                                         "cancelled: device decommissioned")
            await clear_for_decommissioned(conn, principal.tenant_id, device_id, principal.actor)
            await record(conn, principal, "device.decommission", "device", device_id, before, after)
            await _status_changed(conn, principal, before, after)
        return after

    async def list(self, principal: Principal, device_filter: DeviceFilter, *,
                   cursor: str | None = None, limit: int = 100) -> Page:
        require(principal, Permission.READ)
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed("invalid limit", [FieldError("limit", f"must be 1-{MAX_PAGE}")])
        after = decode_cursor(cursor) if cursor else None
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            devices, last = await DeviceRepository(conn).list(
                principal.tenant_id, device_filter, after=after, limit=limit)
        return Page(devices, encode_cursor(last) if last is not None else None)

    async def export(self, principal: Principal, device_filter: DeviceFilter) -> AsyncIterator[Device]:
        """Every matching device in seq order, EXPORT_CHUNK at a time, each chunk read in its own
        short transaction: a slow download holds neither a pooled connection nor a snapshot.

        Keyset pagination on seq (on distance and seq with `near`) lists every device that exists throughout exactly once; one
        created or changed during the download may or may not be in it.
        """
        async for devices, _ in self._export_chunks(principal, device_filter, with_security=False):
            for device in devices:
                yield device

    async def export_with_security(self, principal: Principal,
                                   device_filter: DeviceFilter) -> AsyncIterator[tuple[Device, dict[str, str]]]:
        """As `export`, with each device's credential cells for the CSV (never a key)."""
        async for devices, security in self._export_chunks(principal, device_filter, with_security=True):
            for device in devices:
                yield device, security.get(device.id, {})

    async def _export_chunks(self, principal: Principal, device_filter: DeviceFilter, *,
                             with_security: bool) -> AsyncIterator[tuple[list[Device], dict[UUID, dict[str, str]]]]:
        require(principal, Permission.READ)
        after: tuple | None = None
        while True:
            async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
                devices, more_after = await DeviceRepository(conn).list(
                    principal.tenant_id, device_filter, after=after, limit=EXPORT_CHUNK)
                security = await CredentialRepository(conn).export_cells(
                    principal.tenant_id, [d.id for d in devices]) if with_security and devices else {}
            yield devices, security
            if more_after is None:
                return
            after = more_after

    async def import_rows(self, principal: Principal, rows: list[tuple[int, dict[str, Any]]]) -> list[UUID]:
        """Validate every row, then insert all of them in one transaction or none at all."""
        require(principal, Permission.MANAGE_DEVICES)
        # Tens of thousands of rows take seconds of Python: off the event loop that answers devices.
        return await self._insert_all(principal, *await asyncio.to_thread(validate_rows, rows))

    async def import_csv(self, principal: Principal, text: str) -> list[UUID]:
        require(principal, Permission.MANAGE_DEVICES)
        return await self._insert_all(
            principal, *await asyncio.to_thread(lambda: validate_rows(rows_from_csv(text))))

    async def import_geojson(self, principal: Principal, body: bytes) -> list[UUID]:
        require(principal, Permission.MANAGE_DEVICES)
        return await self._insert_all(
            principal, *await asyncio.to_thread(lambda: validate_rows(rows_from_geojson(body))))

    async def _insert_all(self, principal: Principal, devices: list[NewDevice], numbers: list[int],
                          credentials: list[list[ImportedCredential]], nosec: list[int]) -> list[UUID]:
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = DeviceRepository(conn)
            taken = await repo.endpoints_taken([d.endpoint for d in devices])
            serials = await repo.serials_taken(principal.tenant_id, [d.serial for d in devices if d.serial])
            errors = [FieldError("endpoint", "already exists", n)
                      for n, d in zip(numbers, devices, strict=True) if d.endpoint in taken]
            errors += [FieldError("serial", "already exists in this city", n)
                       for n, d in zip(numbers, devices, strict=True) if d.serial in serials]
            if errors:
                raise Conflict("import rejected; nothing was stored", errors)
            try:
                created = await repo.insert_many(principal.tenant_id, devices)
            except asyncpg.UniqueViolationError as exc:
                # Lost a race with a concurrent create; the transaction rolls back whole.
                raise conflict_from(exc) from None
            for start in range(0, len(created), COPY_CHUNK):  # a few tens of ms of the loop each
                await record_many(conn, principal, "device.create", "device", created[start:start + COPY_CHUNK])
            ids = {d.endpoint: d.id for d in created}
            await self.security.import_credentials(conn, principal, [
                (number, ids[device.endpoint], credential)
                for number, device, row in zip(numbers, devices, credentials, strict=True) for credential in row],
                nosec_rows=nosec)
        return [d.id for d in created]


async def _status_changed(conn: asyncpg.Connection, principal: Principal, before: Device, after: Device) -> None:
    if after.status != before.status:
        await publish(conn, principal.tenant_id, DEVICE_STATUS_CHANGED, "device", after.id, {
            "device_id": after.id, "status": after.status.value, "previous": before.status.value})


def validate_rows(rows: list[tuple[int, dict[str, Any]]]) -> tuple[list[NewDevice], list[int],
                                                                   list[list[ImportedCredential]], list[int]]:
    """Every row checked, with all errors at once; the valid devices, their row numbers, their
    credentials (the security columns) and the numbers of the rows that say `nosec` outright
    (the city's policy decides those)."""
    if not rows:
        raise ValidationFailed("nothing to import", [FieldError("body", "no rows")])
    devices: list[NewDevice] = []
    numbers: list[int] = []
    credentials: list[list[ImportedCredential]] = []
    nosec: list[int] = []
    errors: list[FieldError] = []
    for number, raw in rows:
        row_credentials: list[ImportedCredential] = []
        if str(raw.get("security_mode") or "").strip().lower() == "nosec":
            nosec.append(number)
        if any(column in raw for column in SECURITY_COLUMNS):
            row_credentials, credential_errors = credentials_from_row(raw, number)
            errors += credential_errors
            raw = {k: v for k, v in raw.items() if k not in SECURITY_COLUMNS}
        if raw.get("status") in _NETWORK_STATUSES:
            # Exports of a live city carry online/offline, which the network decides; the
            # imported device starts provisioned and goes online when it registers here.
            raw = {**raw, "status": "provisioned"}
        try:
            devices.append(validate_new_device(raw, row=number))
            numbers.append(number)
            credentials.append(row_credentials)
        except ValidationFailed as exc:
            errors.extend(exc.errors)
    # Duplicates among the valid rows too, so one round of fixes settles the whole file.
    errors += _duplicates_within(devices, numbers)
    errors += duplicate_credentials(list(zip(numbers, credentials, strict=True)))
    if errors:
        errors.sort(key=lambda e: e.row or 0)
        raise ValidationFailed("import rejected; nothing was stored", errors)
    return devices, numbers, credentials, nosec


def _duplicates_within(devices: list[NewDevice], numbers: list[int]) -> list[FieldError]:
    errors: list[FieldError] = []
    for field_name in ("endpoint", "serial"):
        first_seen: dict[str, int] = {}
        for number, device in zip(numbers, devices, strict=True):
            value = getattr(device, field_name)
            if value is None:
                continue
            if value in first_seen:
                errors.append(FieldError(field_name, f"duplicates row {first_seen[value]}", number))
            else:
                first_seen[value] = number
    return errors
