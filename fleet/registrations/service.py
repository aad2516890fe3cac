"""Register, update and de-register devices; sweep expired lifetimes; record what /3/0 says."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from datetime import timedelta
from uuid import UUID

import asyncpg
import structlog

from fleet.access.models import Permission, Principal
from fleet.alarms.service import AlarmService
from fleet.db import Database
from fleet.db.availability import database_away
from fleet.db.listening import ChannelFollower
from fleet.errors import FieldError, NotFound, PermissionDenied, ValidationFailed
from fleet.registrations.models import (BINDING_MODES, MAX_LIFETIME_S, SECURITY_POLICY_CHANGED, SESSIONS_CHANNEL,
                                        DeviceInfo, DevicePolicy,
                                        ReadFormatHints, Registration, RegisterRequest, SessionChange,
                                        UpdateRequest)
from fleet.registrations.repository import RegistrationRepository

log = structlog.get_logger(__name__)

SUPPORTED_VERSIONS = ("1.0", "1.1", "1.2")
# Statuses the network may move a device out of; maintenance and decommissioned are people's.
NETWORK_STATUSES = ("provisioned", "online", "offline")
# How often the connection that follows registration changes proves it is alive, and how soon
# a lost one is opened again.
SESSION_CHECK_INTERVAL_S = 10.0
SESSION_RECONNECT_S = 1.0
SESSIONS_APPLICATION = "fleet-sessions"


class UnknownEndpoint(PermissionDenied):
    """A device tried to register under a name the registry does not hold (or decommissioned)."""


class RegistrationRefused(PermissionDenied):
    """The city's security policy refuses this registration (no DTLS, another device's key)."""


def _policy(device: asyncpg.Record, endpoint: str) -> DevicePolicy:
    return DevicePolicy(device["id"], device["tenant_id"], endpoint, device["allow_nosec_devices"],
                        tuple(device["security_modes"]), device["has_operational"], device["has_bootstrap"])


async def _refuse_other_transport(repo: RegistrationRepository, registration_id: str) -> None:
    """An Update or De-register matched nothing: 4.03 if the registration exists but is not the
    requester's (another transport or another DTLS credential), else 4.04."""
    if await repo.by_id(registration_id) is not None:
        raise PermissionDenied(f"registration {registration_id} belongs to another transport or credential")
    raise NotFound(f"registration {registration_id} not found")


async def _end_refused_update(repo: RegistrationRepository, request: UpdateRequest) -> str:
    """A plain Update matched nothing: if it is the registration's own transport, the city's
    policy refuses it now (NoSec turned off, or the device was given a key since it
    registered), so the registration ends and the reason is returned (4.03 once committed);
    otherwise 4.03 / 4.04 as `_refuse_other_transport` says."""
    registration = await repo.by_id(request.registration_id)
    if registration is None or registration.secure or request.secure:
        await _refuse_other_transport(repo, request.registration_id)
    device = await repo.device_for_endpoint(registration.endpoint, lock=False)
    reason = (_policy(device, registration.endpoint).refuse_register(False, None) if device is not None else None
              ) or "this city requires DTLS: register over coaps:// with the device's credential"
    await repo.end_refused(registration.tenant_id, SECURITY_POLICY_CHANGED, device_id=registration.device_id,
                           plain=True)
    return reason


def validate_registration_fields(lifetime_s: int | None, binding: str | None,
                                 version: str | None) -> list[FieldError]:
    errors = []
    if lifetime_s is not None and not 1 <= lifetime_s <= MAX_LIFETIME_S:
        errors.append(FieldError("lt", f"lifetime must be 1-{MAX_LIFETIME_S} seconds"))
    if binding is not None and (not binding or not set(binding) <= BINDING_MODES):
        errors.append(FieldError("b", "binding must use the letters U, T, S, N, Q"))
    if version is not None and version not in SUPPORTED_VERSIONS:
        errors.append(FieldError("lwm2m", f"supported versions: {', '.join(SUPPORTED_VERSIONS)}"))
    return errors


class RegistrationService:
    def __init__(self, db: Database, node: str, *, alarm_service: AlarmService | None = None) -> None:
        self.db = db
        self.node = node
        # Pass the node's own, so its work-order hook hears a device_offline alarm clearing.
        self.alarms = alarm_service or AlarmService(db)
        # Told each committed Register's read-format hints (read with the device's row anyway),
        # so the /3/0 read that follows needs no transaction of its own to look them up.
        self.on_read_format_hints: Callable[[UUID, ReadFormatHints], None] | None = None

    async def register(self, request: RegisterRequest) -> Registration:
        errors = validate_registration_fields(request.lifetime_s, request.binding, request.lwm2m_version)
        if errors:
            raise ValidationFailed("invalid registration", errors)
        async with self.db.system_tx() as conn:
            repo = RegistrationRepository(conn)
            authenticated = request.authenticated
            device = await repo.device_for_endpoint(
                request.endpoint, credential_id=authenticated.credential_id if authenticated else None)
            if device is None or device["status"] == "decommissioned":
                raise UnknownEndpoint(f"endpoint {request.endpoint!r} is not provisioned")
            refused = _policy(device, request.endpoint).refuse_register(request.secure, request.authenticated)
            if refused is None and not device["credential_live"]:
                # Its DTLS session predates a rotation or revocation its node has not heard of yet.
                refused = "the DTLS credential was replaced or revoked: handshake again with the device's current key"
            if refused is not None:
                raise RegistrationRefused(refused)
            registration = await repo.replace(secrets.token_urlsafe(6), device, request,
                                              "Q" in request.binding, self.node)
            await repo.set_status(device["id"], "online", only_from=NETWORK_STATUSES)
            await self._back(conn, repo, device["id"], was_offline=device["was_offline"])
        if self.on_read_format_hints is not None:
            self.on_read_format_hints(device["id"], ReadFormatHints(device["read_content_format"],
                                                                    registration.object_links))
        log.debug("registered", endpoint=request.endpoint, registration=registration.id)
        return registration

    async def update(self, request: UpdateRequest) -> Registration:
        errors = validate_registration_fields(request.lifetime_s, request.binding, None)
        if errors:
            raise ValidationFailed("invalid registration update", errors)
        queue_mode = None if request.binding is None else "Q" in request.binding
        async with self.db.system_tx() as conn:
            repo = RegistrationRepository(conn)
            registration = await repo.refresh(request, queue_mode, self.node)
            if registration is None:
                refused = await _end_refused_update(repo, request)
            else:
                await repo.set_status(registration.device_id, "online", only_from=NETWORK_STATUSES)
                await self._back(conn, repo, registration.device_id)
        if registration is None:
            raise RegistrationRefused(refused)  # its registration's end committed
        return registration

    async def _back(self, conn: asyncpg.Connection, repo: RegistrationRepository, device_id: UUID, *,
                    was_offline: bool | None = None) -> None:
        """One indexed read per registration (none when the caller read `was_offline` with the
        device's row already: a Register); the alarm is looked at only for a device that had
        been offline beyond its lifetime. That runs in a savepoint: a fault of ours there (the
        alarm, or the work orders that hear of it) is logged and undone, offline_since included,
        so the device's registration stands and its next one tries the alarm again."""
        if not (await repo.was_offline(device_id) if was_offline is None else was_offline):
            return
        try:
            async with conn.transaction():
                tenant_id = await repo.back_from_offline(device_id)
                if tenant_id is not None:
                    await self.alarms.device_back(conn, tenant_id, device_id)
        except Exception as exc:
            if database_away(exc):
                raise
            log.exception("device back online: its device_offline alarm is left as it was", device_id=str(device_id))

    async def deregister(self, registration_id: str, *, secure: bool = False,
                         device_id: UUID | None = None) -> Registration:
        """End a registration; `secure` and `device_id` say where the request came from (over
        coaps, the device its DTLS credential is of), which must be where it registered."""
        async with self.db.system_tx() as conn:
            repo = RegistrationRepository(conn)
            registration = await repo.remove(registration_id, secure, device_id)
            if registration is None:
                await _refuse_other_transport(repo, registration_id)
            await repo.set_status(registration.device_id, "offline", only_from=NETWORK_STATUSES)
        return registration

    async def policy(self, endpoint: str) -> DevicePolicy | None:
        """What the city asks of the device `endpoint` (None: no such device in service)."""
        async with self.db.system_tx() as conn:
            device = await RegistrationRepository(conn).device_for_endpoint(endpoint, lock=False)
        if device is None or device["status"] == "decommissioned":
            return None
        return _policy(device, endpoint)

    async def at_address(self, address: str, port: int, secure: bool = False) -> Registration | None:
        """The registration speaking from `address`:`port` over coaps (`secure`) or plain coap."""
        async with self.db.system_tx() as conn:
            return await RegistrationRepository(conn).at_address(address, port, secure)

    async def by_id(self, registration_id: str) -> Registration | None:
        async with self.db.system_tx() as conn:
            return await RegistrationRepository(conn).by_id(registration_id)

    async def expire(self, grace: timedelta, *, batch: int = 1000) -> list[UUID]:
        """Devices whose lifetime (plus grace) ran out go offline; returns their ids."""
        expired: list[UUID] = []
        while True:
            async with self.db.system_tx() as conn:
                ids = await RegistrationRepository(conn).expire(grace, batch)
            expired += ids
            if len(ids) < batch:
                break
        if expired:
            log.info("registrations expired", devices=len(expired))
        return expired

    async def follow_sessions(self, changed: Callable[[SessionChange | None], None],
                              listening: Callable[[bool], None], *,
                              check_interval_s: float = SESSION_CHECK_INTERVAL_S) -> None:
        """Report every registration change any process or node commits, until cancelled.

        `changed` gets each change (None: a payload this version cannot read, so forget
        everything). `listening(False)` says changes may be missed from now on (the connection
        is lost), `listening(True)` that they are followed again; between the two a caller must
        not trust what it cached. The connection is checked every `check_interval_s`, so a
        silently dead one is noticed too.
        """
        def on_payload(payload: str) -> None:
            try:
                change = SessionChange.from_payload(payload)
            except ValueError:
                log.warning("unreadable session announcement", payload=payload[:100])
                change = None
            changed(change)

        await ChannelFollower(
            self.db.pool, SESSIONS_CHANNEL, on_payload, on_listening=listening,
            application_name=SESSIONS_APPLICATION,
            lost_message="lost the feed of registration changes; sessions are looked up until it is back",
            check_s=check_interval_s, retry_s=SESSION_RECONNECT_S).run()

    async def record_device_info(self, device_id: UUID, info: DeviceInfo) -> None:
        """One transaction, no savepoint: only a serial another device holds (rare) costs a
        second one, recording the rest without it."""
        try:
            async with self.db.system_tx() as conn:
                await RegistrationRepository(conn).record_device_info(device_id, info)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != "devices_serial":
                raise
            log.warning("device reports a serial another device holds", device=str(device_id), serial=info.serial)
            async with self.db.system_tx() as conn:
                await RegistrationRepository(conn).record_device_info(device_id, dataclasses.replace(info, serial=None))

    async def for_device(self, principal: Principal, device_id: UUID) -> Registration:
        if not principal.can(Permission.READ):
            raise PermissionDenied("reading registrations is not allowed for this key")
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            registration = await RegistrationRepository(conn).for_device(principal.tenant_id, device_id)
            if registration is None:
                exists = await conn.fetchval("select 1 from devices where tenant_id = $1 and id = $2",
                                             principal.tenant_id, device_id)
                raise NotFound(f"device {device_id} is not registered" if exists
                               else f"device {device_id} not found")
        return registration

    async def read_format_hints(self, device_id: UUID) -> ReadFormatHints:
        async with self.db.system_tx() as conn:
            hints = await RegistrationRepository(conn).read_format_hints(device_id)
        return hints or ReadFormatHints()

    async def record_read_content_format(self, device_id: UUID, content_format: int) -> None:
        """Remember the format a device's reads succeeded in, for every node and restart."""
        async with self.db.system_tx() as conn:
            await RegistrationRepository(conn).record_read_content_format(device_id, content_format)
