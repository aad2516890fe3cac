"""SQL for registrations and the device status they drive."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import asyncpg

from fleet.events.models import DEVICE_STATUS_CHANGED
from fleet.events.repository import INSERT_EVENTS
from fleet.registrations.models import (SESSIONS_CHANNEL, DeviceInfo, ReadFormatHints, Registration,
                                        RegisterRequest, UpdateRequest)


def _registration(row: asyncpg.Record) -> Registration:
    return Registration(**{k: row[k] for k in Registration.__slots__})


class RegistrationRepository:
    """Every statement that changes which address speaks for a device also announces it on
    SESSIONS_CHANNEL (payloads as `SessionChange.from_payload` reads them), so the
    announcement commits or rolls back with the change."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def device_for_endpoint(self, endpoint: str, *, lock: bool = True,
                                  credential_id: UUID | None = None) -> asyncpg.Record | None:
        """The device and what its city's security policy asks of it (`DevicePolicy`); and
        `credential_live`, whether the DTLS credential `credential_id` can still authenticate (a
        session made with a key retired meanwhile may not register). `was_offline`: what
        the method of that name reads, here with the row (locked unless `lock` is False);
        `read_content_format` for its `ReadFormatHints`."""
        return await self.conn.fetchrow(
            f"""select d.id, d.tenant_id, d.status, t.allow_nosec_devices, t.security_modes,
                       d.offline_since is not null as was_offline, d.read_content_format,
                       $2::uuid is null or exists (select 1 from device_credentials c
                                                   where c.id = $2 and c.state <> 'retired') as credential_live,
                       exists (select 1 from device_credentials c
                               where c.tenant_id = d.tenant_id and c.device_id = d.id
                                 and c.purpose = 'operational' and c.state <> 'retired') as has_operational,
                       exists (select 1 from device_credentials c
                               where c.tenant_id = d.tenant_id and c.device_id = d.id
                                 and c.purpose = 'bootstrap' and c.state <> 'retired') as has_bootstrap
                from devices d join tenants t on t.id = d.tenant_id
                where d.endpoint = $1 {"for update of d" if lock else ""}""", endpoint, credential_id)

    async def replace(self, registration_id: str, device: asyncpg.Record, request: RegisterRequest,
                      queue_mode: bool, node: str) -> Registration:
        """A new Register replaces the device's previous registration, if any. Two statements:
        in one, the insert would still find the row its delete removes (registrations_device_id_key)."""
        await self.conn.execute(
            """with gone as (delete from registrations where device_id = $1)
               select pg_notify($2, concat_ws(' ', $1::uuid, $3::text, $4::integer, $5::text,
                                              case when $6::boolean then 's' end))""",
            device["id"], SESSIONS_CHANNEL, registration_id, request.port, request.address, request.secure)
        row = await self.conn.fetchrow(
            """insert into registrations (id, device_id, tenant_id, endpoint, address, port,
                   lifetime_s, binding, queue_mode, lwm2m_version, object_links, sms_number, node,
                   expires_at, secure)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                       now() + make_interval(secs => $7::integer), $14)
               returning *""",
            registration_id, device["id"], device["tenant_id"], request.endpoint, request.address,
            request.port, request.lifetime_s, request.binding, queue_mode, request.lwm2m_version,
            request.object_links, request.sms_number, node, request.secure)
        return _registration(row)

    async def refresh(self, request: UpdateRequest, queue_mode: bool | None, node: str) -> Registration | None:
        """Apply an Update; a new address (NAT rebinding) is announced to every listener.

        Only over the transport the device registered on (over coaps only by the device the
        registration is of; in plain only while the city takes NoSec devices and the device
        holds no key): None otherwise, as for an unknown registration."""
        device_id = request.authenticated.device_id if request.authenticated is not None else None
        row = await self.conn.fetchrow(
            """with previous as (select r.address, r.port from registrations r join tenants t on t.id = r.tenant_id
                                 where r.id = $1 and r.secure = $11 and ($12::uuid is null or r.device_id = $12)
                                   and (r.secure or t.allow_nosec_devices and not exists (
                                            select 1 from device_credentials c
                                            where c.tenant_id = r.tenant_id and c.device_id = r.device_id
                                              and c.purpose = 'operational' and c.state <> 'retired'))
                                 for update of r)
               update registrations r set
                   address = $2, port = $3,
                   lifetime_s = coalesce($4, lifetime_s),
                   binding = coalesce($5, binding),
                   queue_mode = coalesce($6, queue_mode),
                   object_links = coalesce($7, object_links),
                   sms_number = coalesce($8, sms_number),
                   node = $9, updated_at = now(),
                   expires_at = now() + make_interval(secs => coalesce($4::integer, lifetime_s))
               from previous where r.id = $1
               returning r.*, case when (previous.address, previous.port) <> (r.address, r.port)
                                   then pg_notify($10, concat_ws(' ', r.device_id, r.id, r.port, r.address,
                                                                 case when r.secure then 's' end))
                              end""",
            request.registration_id, request.address, request.port, request.lifetime_s,
            request.binding, queue_mode, request.object_links, request.sms_number, node,
            SESSIONS_CHANNEL, request.secure, device_id)
        return _registration(row) if row else None

    async def remove(self, registration_id: str, secure: bool = False,
                     device_id: UUID | None = None) -> Registration | None:
        """End a registration, only over the transport it came on (and by its device, over coaps)."""
        row = await self.conn.fetchrow(
            """with gone as (delete from registrations
                             where id = $1 and secure = $3 and ($4::uuid is null or device_id = $4)
                             returning *)
               select gone.*, pg_notify($2, gone.device_id::text) from gone""",
            registration_id, SESSIONS_CHANNEL, secure, device_id)
        return _registration(row) if row else None

    async def end_for_device(self, tenant_id: UUID, device_id: UUID) -> None:
        """The device leaves the network (decommissioned): its registration ends everywhere.

        Announced even when no registration was stored, since a listener may still hold one
        from before.
        """
        await self.conn.execute(
            """with gone as (delete from registrations where tenant_id = $1 and device_id = $2)
               select pg_notify($3, $2::text)""",
            tenant_id, device_id, SESSIONS_CHANNEL)

    async def end_refused(self, tenant_id: UUID, reason: str, *, device_id: UUID | None = None,
                          plain: bool = False, secure: bool = False,
                          secure_without_allowed_key: bool = False) -> list[UUID]:
        """End the registrations of the city (or of one device) that its security policy no
        longer admits, in the transaction that changes the policy: `plain` ones (coap://),
        every `secure` one (made with a key just retired), or the secure ones whose device holds
        no operational credential of a mode the city takes any more. Each end is announced on
        SESSIONS_CHANNEL (every node forgets the session at once), and a device that was online
        goes offline with a `device.status_changed` event saying `reason`."""
        rows = await self.conn.fetch(
            f"""with gone as (
                    delete from registrations r using tenants t
                    where t.id = r.tenant_id and r.tenant_id = $1 and ($2::uuid is null or r.device_id = $2)
                      and ((not r.secure and $3) or (r.secure and $4)
                           or (r.secure and $5 and not exists (
                                  select 1 from device_credentials c
                                  where c.tenant_id = r.tenant_id and c.device_id = r.device_id
                                    and c.purpose = 'operational' and c.state <> 'retired'
                                    and c.mode = any(t.security_modes))))
                    returning r.device_id),
                offline as (
                    update devices d set status = 'offline', updated_at = now() from gone
                    where d.tenant_id = $1 and d.id = gone.device_id and d.status = 'online'
                    returning d.tenant_id, d.id),
                published as (
                    {INSERT_EVENTS}
                    select tenant_id, $6, 'device', id::text,
                           jsonb_build_object('device_id', id, 'status', 'offline', 'previous', 'online',
                                              'reason', $7::text)
                    from offline)
                select device_id, pg_notify($8, device_id::text) from gone""",
            tenant_id, device_id, plain, secure, secure_without_allowed_key, DEVICE_STATUS_CHANGED, reason,
            SESSIONS_CHANNEL)
        return [r["device_id"] for r in rows]

    async def set_status(self, device_id: UUID, status: str, *, only_from: tuple[str, ...]) -> None:
        """Move the device to `status` if it is in one of `only_from`, publishing the change.

        One statement, on the path every Register and Update takes: a device already in
        `status` is not written at all (no new row version, no event).
        """
        await self.conn.execute(
            f"""with previous as (
                    select id, status from devices
                    where id = $1 and status = any($3::text[]) and status <> $2
                    for update),
                changed as (
                    update devices d set status = $2, updated_at = now() from previous p
                    where d.id = p.id returning d.tenant_id, d.id, p.status as previous)
                {INSERT_EVENTS}
                select tenant_id, $4, 'device', id::text,
                       jsonb_build_object('device_id', id, 'status', $2::text, 'previous', previous)
                from changed""",
            device_id, status, list(only_from), DEVICE_STATUS_CHANGED)

    async def was_offline(self, device_id: UUID) -> bool:
        """Whether the expiry sweep marked the device offline beyond its lifetime (a read: the
        path every Register and Update takes writes nothing for a device that was not)."""
        return await self.conn.fetchval(
            "select offline_since is not null from devices where id = $1", device_id) or False

    async def back_from_offline(self, device_id: UUID) -> UUID | None:
        """The device registered after its lifetime had run out: forget when, and say its city.
        Touches the row only when offline_since was set (by the expiry sweep)."""
        return await self.conn.fetchval(
            "update devices set offline_since = null where id = $1 and offline_since is not null"
            " returning tenant_id", device_id)

    async def at_address(self, address: str, port: int, secure: bool = False) -> Registration | None:
        row = await self.conn.fetchrow(
            """select * from registrations where address = $1 and port = $2 and secure = $3
               order by updated_at desc limit 1""",
            address, port, secure)
        return _registration(row) if row else None

    async def by_id(self, registration_id: str) -> Registration | None:
        row = await self.conn.fetchrow("select * from registrations where id = $1", registration_id)
        return _registration(row) if row else None

    async def for_device(self, tenant_id: UUID, device_id: UUID) -> Registration | None:
        row = await self.conn.fetchrow(
            "select * from registrations where tenant_id = $1 and device_id = $2", tenant_id, device_id)
        return _registration(row) if row else None

    async def observed_through(self, node: str) -> list[tuple[Registration, str]]:
        """The observations recorded by `node` of devices still registered through it, each
        with the device's registration: what a process taking that node's name over must
        observe again (the one that died held them in memory only)."""
        rows = await self.conn.fetch(
            """select r.*, o.path as observed_path from observations o
               join registrations r on r.device_id = o.device_id and r.node = o.node
               where o.node = $1""", node)
        return [(_registration(row), row["observed_path"]) for row in rows]

    async def expire(self, grace: timedelta, limit: int) -> list[UUID]:
        """Remove registrations past lifetime + grace and mark their devices offline (each
        change published as an event in the same statement).

        SKIP LOCKED lets every node sweep at once without waiting on each other.
        """
        rows = await self.conn.fetch(
            f"""with expired as (
                    select id, device_id from registrations
                    where expires_at + $1::interval < now()
                    order by expires_at limit $2 for update skip locked),
                gone as (delete from registrations r using expired e where r.id = e.id
                         returning r.device_id, r.expires_at),
                -- offline_since keeps when the lifetime ran out, for the device_offline alarm's grace;
                -- `previous` is read before the update, so only a real change is published.
                offline as (
                    update devices d set offline_since = coalesce(d.offline_since, g.expires_at),
                           status = case when d.status = 'online' then 'offline' else d.status end,
                           updated_at = case when d.status = 'online' then now() else d.updated_at end
                    from (select gone.device_id, gone.expires_at, before.status as previous
                          from gone join devices before on before.id = gone.device_id) g
                    where d.id = g.device_id and d.status <> 'decommissioned'
                    returning d.tenant_id, d.id, g.previous),
                published as (
                    {INSERT_EVENTS}
                    select tenant_id, $4, 'device', id::text,
                           jsonb_build_object('device_id', id, 'status', 'offline', 'previous', 'online')
                    from offline where previous = 'online')
                select device_id, pg_notify($3, device_id::text) from gone""",
            grace, limit, SESSIONS_CHANNEL, DEVICE_STATUS_CHANGED)
        return [r["device_id"] for r in rows]

    async def record_device_info(self, device_id: UUID, info: DeviceInfo) -> None:
        """What /3/0 said, serial included (a serial another device holds raises
        UniqueViolationError on `devices_serial`). One statement that writes nothing when the
        row holds it all already: a city re-registering after a power cut reports what it did
        before, and a new version of the row (eight indexes) per device would buy nothing.
        `updated_at` moves when manufacturer, model or firmware does, as before."""
        await self.conn.execute(
            """update devices set manufacturer = coalesce($2, manufacturer),
                                  model = coalesce($3, model),
                                  firmware_version = coalesce($4, firmware_version),
                                  serial = coalesce($5, serial),
                                  updated_at = case when (manufacturer, model, firmware_version) is distinct from
                                                         (coalesce($2, manufacturer), coalesce($3, model),
                                                          coalesce($4, firmware_version))
                                               then now() else updated_at end
               where id = $1
                 and (manufacturer, model, firmware_version, serial) is distinct from
                     (coalesce($2, manufacturer), coalesce($3, model), coalesce($4, firmware_version),
                      coalesce($5, serial))""",
            device_id, info.manufacturer, info.model, info.firmware_version, info.serial or None)

    async def read_format_hints(self, device_id: UUID) -> ReadFormatHints | None:
        row = await self.conn.fetchrow(
            """select d.read_content_format, r.object_links
               from devices d left join registrations r on r.device_id = d.id
               where d.id = $1""", device_id)
        return ReadFormatHints(row["read_content_format"], row["object_links"]) if row else None

    async def record_read_content_format(self, device_id: UUID, content_format: int) -> None:
        await self.conn.execute(
            """update devices set read_content_format = $2
               where id = $1 and read_content_format is distinct from $2""", device_id, content_format)
